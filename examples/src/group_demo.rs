//! The group-call demo: a signaling server and an SFU in this process (loopback, the SFU
//! registered with a shared secret), and one engine per input file. The first creates a
//! group room, the others join it; each publishes its file through the SFU and records
//! what it hears from each of the others to `<out>/<name>/<participant>.wav`. The result
//! is one summary per participant, with how well each recording matches what its
//! speaker sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;
use sotto_engine::audio::InputSpec;
use sotto_engine::audio::analysis::{align_signed, segmental_correlation};
use sotto_engine::audio::codec::EncoderConfig;
use sotto_engine::call::group::{GroupConfig, GroupSummary};
use sotto_engine::call::{IceConfig, Phone};
use sotto_engine::signaling::{ClientConfig, KeyAuthenticator, SignalingClient};
use sotto_engine::{Identity, audio::SAMPLE_RATE};
use sotto_signaling::server::{Config, start};

use crate::voice_demo::read_wav;

/// One participant's view of the call.
pub struct Heard {
    /// The participant's name ("p1", "p2", …) and identity.
    pub name: String,
    /// Its identity key.
    pub identity: String,
    /// Its summary.
    pub summary: GroupSummary,
    /// The SFU's dominant speaker while everyone talked (its identity), the same for all.
    pub dominant_speaker: Option<String>,
    /// Per other participant: (their name, segmental correlation of the recording with
    /// what they sent, see `analysis::segmental_correlation`).
    pub correlations: Vec<(String, Option<f64>)>,
}

impl Heard {
    /// One JSON line.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "participant": self.name,
            "identity": self.identity,
            "received_streams": self.summary.received.len(),
            "sfu_dominant_speaker": self.dominant_speaker,
            "correlations": self.correlations.iter().map(|(who, c)| json!({
                "from": who,
                "correlation": c.map(|c| (c * 1000.0).round() / 1000.0),
            })).collect::<Vec<_>>(),
            "summary": self.summary,
        })
    }
}

/// The reference speech files, one per participant of the default demo.
pub fn reference_inputs() -> Vec<PathBuf> {
    let data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/data"));
    [
        "speech-en-us-1.wav",
        "speech-en-gb-2.wav",
        "speech-en-us-3.wav",
    ]
    .iter()
    .map(|f| data.join(f))
    .collect()
}

/// How well a recording `got` matches the speech `sent`: the signed lag that lines them
/// up (`analysis::align_signed`, searched within 3 s either way) and the segmental
/// correlation from there, in 500 ms pieces each free to move ±100 ms (frames a jitter
/// buffer stretched or dropped shift what follows). `None` for silence.
pub fn speech_correlation(sent: &[i16], got: &[i16]) -> Option<(isize, f64)> {
    let (lag, _) = align_signed(sent, got, SAMPLE_RATE as usize * 3)?;
    segmental_correlation(sent, got, lag, 24_000, 4_800).map(|correlation| (lag, correlation))
}

/// Runs a group call with one participant per input WAV, recording under `out`.
pub async fn run(inputs: &[PathBuf], out: &Path) -> anyhow::Result<Vec<Heard>> {
    if inputs.len() < 2 {
        bail!("a group call needs at least two inputs");
    }
    let data_dir = tempfile::tempdir().context("creating a temporary data dir")?;
    let secret = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let secret_file = data_dir.path().join("sfu-secret");
    std::fs::write(&secret_file, &secret).context("writing the SFU secret")?;
    let mut server_config = Config::new("127.0.0.1:0".parse()?, data_dir.path());
    server_config.sfu_secret_file = Some(secret_file);
    let server = start(server_config).await.context("starting signaling")?;

    // The SFU, registered with the secret.
    let sfu = sotto_sfu::driver::start("127.0.0.1:0".parse()?, None)
        .await
        .context("starting the SFU")?;
    let mut sfu_config = ClientConfig::new(server.ws_url());
    sfu_config.sfu_secret = Some(secret.into_bytes());
    let sfu_key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let sfu_client = SignalingClient::connect(
        sfu_config,
        Arc::new(KeyAuthenticator::new(sfu_key, Some("sfu".into()))),
    )
    .await
    .context("registering the SFU")?;
    let (sfu_sender, sfu_events) = sfu_client.split();
    let control = tokio::spawn(sotto_sfu::control::run(
        sfu_sender,
        sfu_events,
        sfu.handle.clone(),
        sfu.signals,
    ));

    // The participants: the first creates the room, the others join.
    let client_config = ClientConfig::new(server.ws_url());
    let mut clients = Vec::new();
    for (i, _) in inputs.iter().enumerate() {
        let identity = Arc::new(Identity::generate(Some(format!("p{}", i + 1)))?);
        let client = SignalingClient::connect(client_config.clone(), identity.clone()).await?;
        clients.push((format!("p{}", i + 1), identity, client));
    }
    let invite = clients[0]
        .2
        .create_group_room(Some(inputs.len() as u32))
        .await?;
    let sfu_identity = invite.sfu.context("the room has no SFU")?;
    for (_, _, client) in clients.iter().skip(1) {
        client
            .join_room(&invite.room_id, &invite.invite_token)
            .await?;
    }

    let mut calls = Vec::new();
    for ((name, identity, client), input) in clients.into_iter().zip(inputs) {
        let phone = Phone::new(client);
        let config = GroupConfig {
            input: InputSpec::Wav(input.clone()),
            record_dir: Some(out.join(&name)),
            encoder: EncoderConfig::default(),
            jitter: Default::default(),
            ice: IceConfig::loopback(),
            max_duration: Some(Duration::from_secs(120)),
            leave_after_input: Some(Duration::from_millis(1500)),
            e2ee: None,
            decoder_complexity: sotto_engine::audio::codec::DEFAULT_DECODER_COMPLEXITY,
            video: sotto_engine::video::VideoSpec::None,
            video_layers: 3,
            video_sink: None,
        };
        let room = invite.room_id.clone();
        calls.push((
            name,
            identity.public().to_string(),
            tokio::spawn(async move { phone.group_call(room, sfu_identity, config).await }),
        ));
    }
    // Sample the SFU's dominant speaker while everyone talks (from audio levels only).
    let mut dominant = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        dominant = sfu.handle.with(|s| s.dominant_speaker(&invite.room_id.0));
        if dominant.is_some() {
            break;
        }
    }
    let mut summaries = Vec::new();
    for (name, identity, call) in calls {
        let summary = call.await.context("a participant's task")??;
        summaries.push((name, identity, summary));
    }
    control.abort();
    sfu.task.abort();
    server.shutdown().await?;

    // How well each recording matches what its speaker sent.
    let names: Vec<(String, String, PathBuf)> = summaries
        .iter()
        .zip(inputs)
        .map(|((name, identity, _), input)| (name.clone(), identity.clone(), input.clone()))
        .collect();
    let mut heard = Vec::new();
    for (name, identity, summary) in summaries {
        let mut correlations = Vec::new();
        for stream in &summary.received {
            let Some((speaker, _, input)) =
                names.iter().find(|(_, id, _)| *id == stream.participant)
            else {
                continue;
            };
            let correlation = match (&stream.recording, read_wav(input)) {
                (Some(recording), Ok(sent)) => read_wav(recording)
                    .ok()
                    .and_then(|got| speech_correlation(&sent, &got))
                    .map(|(_, correlation)| correlation),
                _ => None,
            };
            correlations.push((speaker.clone(), correlation));
        }
        heard.push(Heard {
            dominant_speaker: dominant.clone(),
            name,
            identity,
            summary,
            correlations,
        });
    }
    Ok(heard)
}
