//! `sotto-bench run --group N`: a scenario through the SFU. N engines join one room of an
//! in-process signaling server and SFU; the first speaks the reference speech, the others
//! listen and record. The listeners join first; the speaker joins once their media paths
//! are up (at most [`LISTENERS_WAIT`]), and its file input starts when the SFU says
//! someone receives it (`layers`, or after 5 s), as in any group call of the engine. The SFU advertises the relay's address instead of its
//! own, so every participant's every datagram, both ways, crosses the relay, each on its
//! own leg with its own seeded links ([`crate::relay`]). Each listener's recording is scored like a
//! one-to-one call's; the mouth-to-ear delay is not (the engine does not report when a
//! group stream's playout started against the speaker's capture). With `--video` the
//! speaker also sends the test pattern in three simulcast layers, and each listener scores
//! what it decodes against the source pictures (PSNR/SSIM on one picture in five).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sotto_engine::Identity;
use sotto_engine::audio::codec::EncoderConfig;
use sotto_engine::audio::{InputSpec, SAMPLE_RATE};
use sotto_engine::call::group::GroupConfig;
use sotto_engine::call::{IceConfig, Phone};
use sotto_engine::signaling::{ClientConfig, KeyAuthenticator, SignalingClient};
use sotto_signaling::server::{Config, start};

use sotto_engine::video::quality::QualityMeter;

use crate::quality::{
    CallResult, Measured, NotConnected, Peer, Scoring, Tuning, VideoResult, read_wav, score,
    scoring_sinks, test_pattern,
};
use crate::relay::{Relay, RelayConfig};
use crate::scenario::Scenario;

/// How long the speaker waits for the listeners' media paths before it joins.
const LISTENERS_WAIT: Duration = Duration::from_secs(10);

/// How a group run of `scenario` with `participants` engines is named in reports.
pub fn group_name(scenario: &str, participants: usize) -> String {
    format!("{scenario}/group{participants}")
}

/// Runs one group call of `participants` (at least 2) under `scenario` with `seed`; one
/// result per listener, named `<scenario>/group<N>`.
pub async fn run_group_call(
    scenario: &Scenario,
    seed: u64,
    participants: usize,
    input: &Path,
    out: &Path,
    scoring: &Scoring,
    tuning: &Tuning,
) -> anyhow::Result<Vec<CallResult>> {
    if participants < 2 {
        bail!("a group call needs at least two participants");
    }
    let name = group_name(&scenario.name, participants);
    let reference = read_wav(input)?;
    let speech = Duration::from_secs_f64(reference.len() as f64 / f64::from(SAMPLE_RATE));
    let data = tempfile::tempdir().context("a data dir for signaling")?;
    let secret: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret_file = data.path().join("sfu-secret");
    std::fs::write(&secret_file, &secret)?;
    let mut server_config = Config::new("127.0.0.1:0".parse()?, data.path());
    server_config.sfu_secret_file = Some(secret_file);
    let server = start(server_config).await.context("starting signaling")?;

    // The SFU on a port of its own, telling participants to use the relay's address.
    let sfu_addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let relay = Relay::bind(RelayConfig::for_scenario(
        scenario,
        seed,
        "127.0.0.1:0".parse()?,
        sfu_addr,
        speech + Duration::from_secs(60),
    ))
    .await
    .context("binding the relay")?;
    let sfu = sotto_sfu::driver::start(sfu_addr, Some(relay.listen_addr()?))
        .await
        .context("starting the SFU")?;
    let relay = relay.spawn();
    let mut sfu_config = ClientConfig::new(server.ws_url());
    sfu_config.sfu_secret = Some(secret.into_bytes());
    let sfu_key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let (sfu_sender, sfu_events) = SignalingClient::connect(
        sfu_config,
        Arc::new(KeyAuthenticator::new(sfu_key, Some("sfu".into()))),
    )
    .await
    .context("registering the SFU")?
    .split();
    let control = tokio::spawn(sotto_sfu::control::run(
        sfu_sender,
        sfu_events,
        sfu.handle.clone(),
        sfu.signals,
    ));

    let client_config = ClientConfig::new(server.ws_url());
    let mut clients = Vec::new();
    for i in 0..participants {
        let identity = Arc::new(Identity::generate(Some(format!("p{}", i + 1)))?);
        clients.push((
            identity.clone(),
            SignalingClient::connect(client_config.clone(), identity).await?,
        ));
    }
    let invite = clients[0]
        .1
        .create_group_room(Some(participants as u32))
        .await?;
    let sfu_identity = invite.sfu.context("the room has no SFU")?;
    for (_, client) in clients.iter().skip(1) {
        client
            .join_room(&invite.room_id, &invite.invite_token)
            .await?;
    }
    let speaker = clients[0].0.public().to_string();
    let mut calls = Vec::new();
    let mut meters = Vec::new();
    // Listeners first: the speaker joins a room whose listeners are connected, as in a
    // call someone speaks into (its file input then waits only for the SFU to forward
    // it). A listener that cannot connect within the wait is scored as it comes.
    let mut clients: Vec<_> = clients.into_iter().map(Some).collect();
    for i in (1..participants).chain([0]) {
        if i == 0 {
            let room = invite.room_id.0.clone();
            let wanted = participants - 1;
            let waited = tokio::time::timeout(LISTENERS_WAIT, async {
                while sfu.handle.with(|s| s.connected_legs_in(&room)) < wanted {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            if waited.is_err() {
                eprintln!(
                    "{name} seed {seed}: not every listener connected within {LISTENERS_WAIT:?}"
                );
            }
        }
        let Some((_, client)) = clients[i].take() else {
            continue;
        };
        let listener = i > 0;
        let meter = QualityMeter::default();
        meters.push((i, meter.clone()));
        let video_sink = (tuning.video && listener).then(|| scoring_sinks(&meter));
        let config = GroupConfig {
            input: if listener {
                InputSpec::Silence
            } else {
                InputSpec::Wav(input.to_owned())
            },
            record_dir: listener
                .then(|| out.join(format!("{}-seed{seed}-p{}", scenario.name, i + 1))),
            encoder: EncoderConfig {
                dred_units: tuning.dred_units,
                ..EncoderConfig::default()
            },
            jitter: Default::default(),
            ice: IceConfig::loopback(),
            // Listeners stay through the speaker's setup (waited for above, then its own)
            // and its speech; the speaker leaves after its input.
            max_duration: Some(
                speech
                    + if listener {
                        LISTENERS_WAIT + Duration::from_secs(6)
                    } else {
                        Duration::from_secs(4)
                    },
            ),
            leave_after_input: Some(Duration::from_millis(1500)),
            e2ee: None,
            decoder_complexity: tuning.decoder_complexity,
            video: test_pattern(tuning.video && !listener),
            video_layers: 3,
            video_codec: tuning.video_codec,
            record_video: false,
            max_quality: None,
            control: None,
            video_sink,
        };
        let phone = Phone::new(client);
        let room = invite.room_id.clone();
        calls.push((
            i,
            tokio::spawn(async move { phone.group_call(room, sfu_identity, config).await }),
        ));
    }
    // Back in participant order: the speaker first.
    calls.sort_by_key(|(i, _)| *i);
    meters.sort_by_key(|(i, _)| *i);
    let meters: Vec<QualityMeter> = meters.into_iter().map(|(_, meter)| meter).collect();
    let mut summaries = Vec::new();
    for (_, call) in calls {
        summaries.push(call.await.context("a participant's task")??);
    }
    let relay = relay.stop().await;
    control.abort();
    sfu.task.abort();
    server.shutdown().await?;

    let mut results = Vec::new();
    for (summary, meter) in summaries.iter().zip(&meters).skip(1) {
        let Some(stream) = summary.received.iter().find(|s| s.participant == speaker) else {
            return Err(NotConnected(format!(
                "{name}: a listener never heard the speaker ({})",
                summary.end
            ))
            .into());
        };
        let Some(recording) = stream.recording.clone() else {
            bail!("{name}: no recording of the speaker");
        };
        let got = &stream.audio;
        let expected = got.packets + got.lost;
        let percent = |part: f64| {
            if expected == 0 {
                0.0
            } else {
                (part * 10_000.0 / expected as f64).round() / 100.0
            }
        };
        let measured = Measured {
            recording_offset_ms: None,
            loss_percent: percent(got.lost as f64),
            concealed_percent: percent(got.concealed_ms / 20.0),
            jitter_buffer_ms: got.jitter_buffer_mean_ms,
            setup_ms: None,
            bitrate_kbps: summaries[0].sent.payload_kbps,
            final_bitrate_bps: summaries[0].sent.final_bitrate_bps,
            fec_loss_percent: summaries[0].sent.final_loss_percent,
            received: got.clone(),
            caller_timeline: Vec::new(),
            callee_timeline: Vec::new(),
        };
        let mut result = score(
            scenario,
            seed,
            Peer::Sotto,
            &reference,
            input,
            recording,
            measured,
            relay,
            scoring,
        )?;
        result.scenario = name.clone();
        if tuning.video {
            let sent = summaries[0].video_sent.clone().unwrap_or_default();
            result.video = Some(VideoResult {
                received: stream.video.clone().unwrap_or_default(),
                quality: meter.summary(),
                sent_kbps: sent.kbps,
                final_layer_kbps: sent.final_layer_kbps,
                keyframes_sent: sent.keyframes,
            });
        }
        results.push(result);
    }
    Ok(results)
}
