//! The group-call demo: a signaling server and an SFU in this process (loopback, the SFU
//! registered with a shared secret), and one engine per input file. The participants
//! first form an MLS group (as members of one conversation) and key SFrame from it, so
//! the SFU forwards only ciphertext. The first creates a group room, the others join
//! it; each publishes its file (and, with video, a test pattern or a Y4M file in
//! simulcast) through the SFU and records what it hears from each of the others to
//! `<out>/<name>/<participant>.wav`. The result is one summary per participant, with how
//! well each recording matches what its speaker sent, and for video, per sender: frames,
//! rate, freezes, layer switches, PSNR/SSIM against the source and glass-to-glass delay.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;
use sotto_engine::audio::InputSpec;
use sotto_engine::audio::analysis::{align_signed, segmental_correlation};
use sotto_engine::call::group::{GroupConfig, GroupSummary};
use sotto_engine::call::video::VideoReceivedSummary;
use sotto_engine::call::{IceConfig, Phone};
use sotto_engine::e2ee::media::MediaCrypto;
use sotto_engine::messaging::messenger::Messenger;
use sotto_engine::signaling::{ClientConfig, KeyAuthenticator, SignalingClient};
use sotto_engine::video::quality::{QualityMeter, QualitySink, QualitySummary};
use sotto_engine::video::{SinkFactory, VideoCodec, VideoSink, VideoSpec};
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
    /// Per other participant who sent video: what arrived and how it looked.
    pub video: Vec<SeenVideo>,
}

/// One sender's video as a participant received it.
#[derive(Debug, Clone, Serialize)]
pub struct SeenVideo {
    /// The sender's name.
    pub from: String,
    /// Frames, rate, freezes, layer switches, delay.
    #[serde(flatten)]
    pub received: VideoReceivedSummary,
    /// PSNR and SSIM against the source pictures (test pattern only).
    pub quality: Option<QualitySummary>,
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
            "video": self.video,
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

/// How the demo's call runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// One WAV file per participant (what each says).
    pub inputs: Vec<PathBuf>,
    /// Where recordings go (`<out>/<name>/<participant>.wav`, `.y4m` with video).
    pub out: PathBuf,
    /// What every participant shows ([`VideoSpec::None`]: an audio call).
    pub video: VideoSpec,
    /// The codec everyone sends video in.
    pub video_codec: VideoCodec,
    /// Whether video is recorded too (large: about 10 MB a second a stream at 360p).
    pub record_video: bool,
    /// End-to-end encryption: the participants form an MLS group first and key SFrame
    /// from it, as members of one conversation do.
    pub e2ee: bool,
    /// How long the call lasts; `None`: until the inputs end (and 1.5 s more).
    pub duration: Option<Duration>,
    /// Score one received picture in this many (PSNR, SSIM; test-pattern video only).
    pub score_every: u64,
}

impl Options {
    /// An end-to-end encrypted audio call of `inputs`, recorded under `out`.
    pub fn audio(inputs: Vec<PathBuf>, out: PathBuf) -> Options {
        Options {
            inputs,
            out,
            video: VideoSpec::None,
            video_codec: VideoCodec::default(),
            record_video: false,
            e2ee: true,
            duration: None,
            score_every: 3,
        }
    }
}

/// The participants' identities, each with a data directory of its own.
struct Participant {
    name: String,
    identity: Arc<Identity>,
    dir: PathBuf,
}

/// Makes an MLS group of all `participants` (the first creates it, the others fetch
/// their welcome) and returns each one's SFrame keys for its current epoch.
async fn media_keys(
    server_url: &str,
    participants: &[Participant],
) -> anyhow::Result<Vec<Arc<MediaCrypto>>> {
    let config = ClientConfig::new(server_url);
    // Everyone connects once so that the others can fetch a key package of theirs.
    for p in &participants[1..] {
        Messenger::connect(config.clone(), p.identity.clone(), &p.dir)
            .await?
            .close()
            .await;
    }
    let mut creator = Messenger::connect(
        config.clone(),
        participants[0].identity.clone(),
        &participants[0].dir,
    )
    .await?;
    let others: Vec<_> = participants[1..]
        .iter()
        .map(|p| p.identity.public())
        .collect();
    let group = creator.create_room(Some("Demo call"), &others).await?;
    let mut epochs = vec![creator.core().media_epoch(&group)?];
    creator.close().await;
    for p in &participants[1..] {
        let mut messenger = Messenger::connect(config.clone(), p.identity.clone(), &p.dir).await?;
        messenger.sync(Duration::from_millis(400)).await?;
        epochs.push(messenger.core().media_epoch(&group)?);
        messenger.close().await;
    }
    let now = Instant::now();
    epochs
        .iter()
        .map(|epoch| Ok(Arc::new(MediaCrypto::new(epoch, now)?)))
        .collect()
}

/// Runs a group call with one participant per input WAV, recording under `out`:
/// end-to-end encrypted, audio only.
pub async fn run(inputs: &[PathBuf], out: &Path) -> anyhow::Result<Vec<Heard>> {
    run_with(&Options::audio(inputs.to_vec(), out.to_path_buf())).await
}

/// Runs the demo's call as `options` say.
pub async fn run_with(options: &Options) -> anyhow::Result<Vec<Heard>> {
    let inputs = &options.inputs;
    let out = &options.out;
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
    let mut server_config = Config::new("127.0.0.1:0".parse()?, data_dir.path().join("server"));
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

    let mut participants = Vec::new();
    for i in 0..inputs.len() {
        let name = format!("p{}", i + 1);
        participants.push(Participant {
            identity: Arc::new(Identity::generate(Some(name.clone()))?),
            dir: data_dir.path().join(&name),
            name,
        });
    }
    let keys = if options.e2ee {
        media_keys(&server.ws_url(), &participants)
            .await
            .context("forming the MLS group the call is keyed from")?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; participants.len()]
    };

    // The participants: the first creates the room, the others join.
    let client_config = ClientConfig::new(server.ws_url());
    let mut clients = Vec::new();
    for p in &participants {
        clients.push(SignalingClient::connect(client_config.clone(), p.identity.clone()).await?);
    }
    let invite = clients[0]
        .create_group_room(Some(inputs.len() as u32))
        .await?;
    let sfu_identity = invite.sfu.context("the room has no SFU")?;
    for client in clients.iter().skip(1) {
        client
            .join_room(&invite.room_id, &invite.invite_token)
            .await?;
    }

    let source_size = match options.video {
        VideoSpec::TestPattern { width, height, .. } => Some((width, height)),
        _ => None,
    };
    let meters: Arc<Mutex<Vec<(String, String, QualityMeter)>>> = Arc::default();
    let mut calls = Vec::new();
    for (((p, client), input), e2ee) in participants.iter().zip(clients).zip(inputs).zip(keys) {
        let phone = Phone::new(client);
        let video_sink = source_size.map(|(width, height)| {
            let (viewer, meters, every) = (p.name.clone(), meters.clone(), options.score_every);
            SinkFactory(Arc::new(move |sender: &str| {
                let meter = QualityMeter::default();
                meters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((viewer.clone(), sender.to_owned(), meter.clone()));
                Box::new(QualitySink::new(width, height, every, meter)) as Box<dyn VideoSink>
            }))
        });
        let config = GroupConfig {
            record_dir: Some(out.join(&p.name)),
            ice: IceConfig::loopback(),
            max_duration: Some(options.duration.unwrap_or(Duration::from_secs(120))),
            leave_after_input: options
                .duration
                .is_none()
                .then_some(Duration::from_millis(1500)),
            e2ee,
            video: options.video.clone(),
            video_codec: options.video_codec,
            record_video: options.record_video,
            video_sink,
            ..GroupConfig::new(InputSpec::Wav(input.clone()))
        };
        let room = invite.room_id.clone();
        calls.push((
            p.name.clone(),
            p.identity.public().to_string(),
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
    let meters = std::mem::take(
        &mut *meters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut heard = Vec::new();
    for (name, identity, mut summary) in summaries {
        let mut correlations = Vec::new();
        let mut video = Vec::new();
        for stream in &mut summary.received {
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
            if let Some(received) = &stream.video {
                let quality = meters
                    .iter()
                    .find(|(viewer, sender, _)| *viewer == name && *sender == stream.participant)
                    .map(|(_, _, meter)| meter.summary());
                video.push(SeenVideo {
                    from: speaker.clone(),
                    received: received.clone(),
                    quality,
                });
            }
        }
        heard.push(Heard {
            dominant_speaker: dominant.clone(),
            name,
            identity,
            summary,
            correlations,
            video,
        });
    }
    Ok(heard)
}
