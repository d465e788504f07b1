//! The one-to-one voice demo: a signaling server in this process on a free loopback port,
//! two engines (Alice and Bob) with fresh identities, and a real call between them —
//! WebRTC over loopback with DTLS-SRTP, Opus, the jitter buffer. Alice plays a WAV file
//! into the call; what Bob hears is written to another WAV file. The result is both call
//! summaries and how the received audio lines up with what was sent.
//!
//! The call is end-to-end encrypted as a Sotto call between two people who talk is: Alice
//! first starts an MLS conversation with Bob through the server's key-package directory
//! and mailbox, and each frame of the call's audio is SFrame-sealed with keys exported
//! from it (on top of DTLS-SRTP).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;
use sotto_engine::audio::analysis::{active_span, align, segmental_correlation};
use sotto_engine::audio::codec::EncoderConfig;
use sotto_engine::audio::{InputSpec, OutputSpec, SAMPLE_RATE};
use sotto_engine::call::{CallConfig, CallSummary, IceConfig, Phone};
use sotto_engine::e2ee::media::{MediaCrypto, MediaEpoch};
use sotto_engine::messaging::messenger::Messenger;
use sotto_engine::procstat::process_cpu_seconds;
use sotto_engine::{Identity, SignalingClient};
use sotto_signaling::server::{Config, start};

/// Longest wait for the callee to see the call.
const WAIT: Duration = Duration::from_secs(20);

/// What one run of the demo produced.
pub struct VoiceCall {
    /// Alice's summary (the caller, who sent the file).
    pub caller: CallSummary,
    /// Bob's summary (who recorded it).
    pub callee: CallSummary,
    /// Mouth-to-ear delay: where the sent audio appears in the recording, ms, corrected
    /// for the two ends' media clocks starting at different instants.
    pub mouth_to_ear_ms: Option<f64>,
    /// Where the input starts in the recording, in samples at 48 kHz.
    pub lag_samples: Option<usize>,
    /// Correlation of the recording with the input at that delay.
    pub correlation: Option<f64>,
    /// The same, in 500 ms pieces each free to move ±100 ms (a jitter buffer that stretched
    /// or dropped one frame shifts everything after it by 20 ms, which ruins the global
    /// correlation though every word arrived).
    pub segmental_correlation: Option<f64>,
    /// Length of the speech (first to last loud 10 ms block) in the input, seconds.
    pub sent_speech_s: Option<f64>,
    /// The same in the recording.
    pub received_speech_s: Option<f64>,
    /// CPU this process used while the call was up (both ends: capture, Opus, SRTP,
    /// jitter buffer, playout; and the in-process signaling server, which is idle then),
    /// as a percentage of one core. Linux only.
    pub cpu_percent_of_one_core: Option<f64>,
    /// The same by thread name (both ends' `sotto-capture` threads together, and so on;
    /// `tokio-rt-worker` carries WebRTC, SRTP, SFrame and signaling), from the threads'
    /// own counters read every 200 ms while the call was up. Linux only.
    pub cpu_by_thread: std::collections::BTreeMap<String, f64>,
}

impl VoiceCall {
    /// The one JSON line the example prints.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "demo": "one_to_one_voice",
            "mouth_to_ear_ms": self.mouth_to_ear_ms,
            "lag_samples": self.lag_samples,
            "correlation": self.correlation.map(|c| (c * 1000.0).round() / 1000.0),
            "segmental_correlation": self.segmental_correlation.map(|c| (c * 1000.0).round() / 1000.0),
            "sent_speech_s": self.sent_speech_s,
            "received_speech_s": self.received_speech_s,
            "cpu_percent_of_one_core": self.cpu_percent_of_one_core,
            "cpu_by_thread": self.cpu_by_thread,
            "caller": self.caller,
            "callee": self.callee,
        })
    }
}

/// Alice starts an MLS conversation with Bob (his key package from the directory, her
/// welcome through his mailbox); returns each side's SFrame keying material for it.
async fn direct_conversation(
    config: &sotto_engine::ClientConfig,
    alice: &Arc<Identity>,
    bob: &Arc<Identity>,
    dir: &Path,
) -> anyhow::Result<(MediaEpoch, MediaEpoch)> {
    let (alice_dir, bob_dir) = (dir.join("alice"), dir.join("bob"));
    // Bob connects once so his key packages are in the directory.
    Messenger::connect(config.clone(), bob.clone(), &bob_dir)
        .await?
        .close()
        .await;
    let mut messenger = Messenger::connect(config.clone(), alice.clone(), &alice_dir).await?;
    let group = messenger.direct(&bob.public()).await?;
    let alice_keys = messenger.core().media_epoch(&group)?;
    messenger.close().await;
    let mut messenger = Messenger::connect(config.clone(), bob.clone(), &bob_dir).await?;
    messenger.sync(Duration::from_millis(300)).await?;
    let bob_keys = messenger
        .core()
        .media_epoch(&group)
        .context("Bob did not join the conversation")?;
    messenger.close().await;
    Ok((alice_keys, bob_keys))
}

/// Runs a call that plays `input` from Alice to Bob with these Opus settings (both ends;
/// the engine's default decoder complexity unless one is given) and records what Bob
/// hears to `output`.
pub async fn run(
    input: &Path,
    output: &Path,
    encoder: EncoderConfig,
    decoder_complexity: Option<u8>,
) -> anyhow::Result<VoiceCall> {
    let decoder_complexity =
        decoder_complexity.unwrap_or(sotto_engine::audio::codec::DEFAULT_DECODER_COMPLEXITY);
    let data_dir = tempfile::tempdir().context("creating a temporary data dir")?;
    let server = start(Config::new("127.0.0.1:0".parse()?, data_dir.path()))
        .await
        .context("starting the signaling server")?;
    let client_config = sotto_engine::ClientConfig::new(server.ws_url());
    let alice_id = Arc::new(Identity::generate(Some("Alice".into()))?);
    let bob_id = Arc::new(Identity::generate(Some("Bob".into()))?);
    let (alice_keys, bob_keys) =
        direct_conversation(&client_config, &alice_id, &bob_id, data_dir.path()).await?;
    let alice = Phone::new(SignalingClient::connect(client_config.clone(), alice_id).await?);
    let mut bob = Phone::new(SignalingClient::connect(client_config, bob_id.clone()).await?);

    let caller_config = CallConfig {
        input: InputSpec::Wav(input.to_owned()),
        output: OutputSpec::Null,
        encoder: encoder.clone(),
        ice: IceConfig::loopback(),
        hang_up_after_input: Some(Duration::from_secs(1)),
        max_duration: Some(Duration::from_secs(600)),
        decoder_complexity,
        e2ee: Some(Arc::new(MediaCrypto::new(
            &alice_keys,
            std::time::Instant::now(),
        )?)),
        ..CallConfig::default()
    };
    let callee_config = CallConfig {
        input: InputSpec::Silence,
        output: OutputSpec::Wav(output.to_owned()),
        encoder,
        ice: IceConfig::loopback(),
        max_duration: Some(Duration::from_secs(600)),
        decoder_complexity,
        e2ee: Some(Arc::new(MediaCrypto::new(
            &bob_keys,
            std::time::Instant::now(),
        )?)),
        ..CallConfig::default()
    };

    let call = alice.call(bob_id.public(), caller_config)?;
    let incoming = tokio::time::timeout(WAIT, bob.next_incoming())
        .await
        .context("Bob saw no call")?
        .context("Bob's signaling closed")?;
    let answered = incoming.answer(callee_config).await?;
    let cpu_before = process_cpu_seconds();
    let wall_before = std::time::Instant::now();
    let threads = ThreadCpu::watch();
    let (caller, callee) = tokio::join!(call.finished(), answered.finished());
    let cpu_by_thread = threads.stop(wall_before.elapsed());
    let cpu_percent_of_one_core = cpu_before
        .zip(process_cpu_seconds())
        .map(|(before, after)| {
            let percent = (after - before) / wall_before.elapsed().as_secs_f64() * 100.0;
            (percent * 100.0).round() / 100.0
        });
    let (caller, callee) = (caller?, callee?);
    server.shutdown().await?;
    if !caller.connected || !callee.connected {
        bail!(
            "the call did not connect: caller: {}; callee: {}",
            caller.end.detail,
            callee.end.detail
        );
    }

    let sent = read_wav(input)?;
    let received = read_wav(output)?;
    let alignment = align(&sent, &received, SAMPLE_RATE as usize * 2);
    // Alice's input waits until media flows both ways; Bob's recording starts with his
    // media clock.
    let input_started = caller.input_started.or(caller.media_started);
    let clock_offset_ms = match (input_started, callee.media_started) {
        (Some(a), Some(b)) => {
            // Bob's recording starts at b, Alice's input at a: a lag of L samples in the
            // recording is L/48 ms after b, i.e. L/48 + (b - a) after Alice sent it.
            if b >= a {
                (b - a).as_secs_f64() * 1000.0
            } else {
                -((a - b).as_secs_f64() * 1000.0)
            }
        }
        _ => 0.0,
    };
    let speech_s = |samples: &[i16]| {
        active_span(samples, SAMPLE_RATE, 40.0).map(|span| span.len() as f64 / SAMPLE_RATE as f64)
    };
    Ok(VoiceCall {
        mouth_to_ear_ms: alignment.map(|a| {
            ((a.lag as f64 * 1000.0 / SAMPLE_RATE as f64 + clock_offset_ms) * 10.0).round() / 10.0
        }),
        lag_samples: alignment.map(|a| a.lag),
        correlation: alignment.map(|a| a.correlation),
        segmental_correlation: alignment
            .and_then(|a| segmental_correlation(&sent, &received, a.lag as isize, 24_000, 4_800)),
        sent_speech_s: speech_s(&sent),
        received_speech_s: alignment.and_then(|a| speech_s(&received[a.lag..])),
        cpu_percent_of_one_core,
        cpu_by_thread,
        caller,
        callee,
    })
}

/// Reads a 48 kHz mono 16-bit WAV file, as the demo writes and the reference files are.
pub fn read_wav(path: &Path) -> anyhow::Result<Vec<i16>> {
    Ok(sotto_engine::audio::wav::read_48k_mono(path)?)
}

/// Per-thread CPU while a call is up: a thread that reads `/proc/self/task/*/stat` every
/// 200 ms and keeps each thread's first and last count (a call's capture and playout
/// threads end with it, so a reading at the end alone would miss them).
struct ThreadCpu {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<std::collections::HashMap<u64, (String, u64, u64)>>,
}

impl ThreadCpu {
    fn watch() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handle = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut seen: std::collections::HashMap<u64, (String, u64, u64)> =
                    std::collections::HashMap::new();
                let mut first_round = true;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for (tid, comm, ticks) in thread_ticks() {
                        // Threads born during the call count from zero.
                        let start = if first_round { ticks } else { 0 };
                        seen.entry(tid).or_insert((comm, start, ticks)).2 = ticks;
                    }
                    first_round = false;
                    std::thread::sleep(Duration::from_millis(200));
                }
                seen
            }
        });
        ThreadCpu { stop, handle }
    }

    /// Percent of one core by thread name over `wall`.
    fn stop(self, wall: Duration) -> std::collections::BTreeMap<String, f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = self.handle.join().unwrap_or_default();
        let mut by_name = std::collections::BTreeMap::new();
        for (comm, first, last) in seen.into_values() {
            *by_name.entry(comm).or_insert(0.0) += last.saturating_sub(first) as f64 / 100.0;
        }
        by_name
            .into_iter()
            .map(|(name, seconds)| {
                let percent = seconds / wall.as_secs_f64().max(1e-3) * 100.0;
                (name, (percent * 100.0).round() / 100.0)
            })
            .filter(|(_, percent)| *percent > 0.0)
            .collect()
    }
}

/// (thread id, name, utime + stime in clock ticks) of this process's threads.
fn thread_ticks() -> Vec<(u64, String, u64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid: u64 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let comm = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_owned();
            let fields: Vec<&str> = stat
                .get(stat.rfind(')')? + 2..)?
                .split_whitespace()
                .collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some((tid, comm, utime + stime))
        })
        .collect()
}
