//! `sotto call` and `sotto answer`: a one-to-one voice call from the command line, with
//! headless flags for files instead of devices. Call states go to stderr as they happen;
//! the call summary is one JSON line on stdout at the end.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use sotto_engine::Identity;
use sotto_engine::audio::OutputSpec;
use sotto_engine::audio::codec::{EncoderConfig, FrameDuration};
use sotto_engine::call::{
    CallConfig, CallEvent, CallHandle, CallState, CallSummary, IceServer, Phone,
};
use sotto_engine::e2ee::media::MediaCrypto;
use sotto_engine::identity::fingerprint;
use sotto_engine::messaging::{Body, Conversations, GroupId, Received};
use sotto_engine::procstat::process_cpu_seconds;
use sotto_engine::store::STORE_FILE;
use sotto_engine::video::{VideoCodec, VideoOutput, VideoSpec};

use crate::session::SessionArgs;
use sotto_signaling::protocol::IdentityKey;

/// Flags shared by `call` and `answer`.
#[derive(Debug, Args)]
pub struct CallArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Audio out: `default`, `device:NAME`, a .wav file or `null`.
    #[arg(long, default_value = "default", value_name = "SPEC")]
    pub output: String,
    /// Opus start bitrate in bit/s (then adapted between 16000 and 64000).
    #[arg(long, default_value_t = 32_000)]
    pub bitrate: u32,
    /// Opus frame duration: 10, 20, 40 or 60 ms.
    #[arg(long, default_value = "20ms")]
    pub frame: String,
    /// Turn Opus in-band FEC off.
    #[arg(long)]
    pub no_fec: bool,
    /// Turn Opus DTX off.
    #[arg(long)]
    pub no_dtx: bool,
    /// A STUN server (`stun:host:port`); repeatable.
    #[arg(long, value_name = "URL")]
    pub stun: Vec<String>,
    /// A TURN server (`turn:host:port?transport=udp`); repeatable, with --turn-user and
    /// --turn-password.
    #[arg(long, value_name = "URL")]
    pub turn: Vec<String>,
    /// TURN user name.
    #[arg(long, env = "SOTTO_TURN_USER")]
    pub turn_user: Option<String>,
    /// TURN password.
    #[arg(long, env = "SOTTO_TURN_PASSWORD", hide_env_values = true)]
    pub turn_password: Option<String>,
    /// Print call states as JSON lines on stderr instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not encrypt media end to end, even with someone you share a conversation with
    /// (for browsers and other WebRTC endpoints, which hold no SFrame keys). Media is then
    /// protected by DTLS-SRTP only.
    #[arg(long)]
    pub no_e2ee: bool,
    /// What to show: none, test-pattern (test-pattern:WxH@FPS), a FILE.y4m played in a
    /// loop, or camera / camera:DEVICE.
    #[arg(long, value_name = "SPEC", default_value = "none")]
    pub video: VideoSpec,
    /// The codec to send video in: vp8, or h264 (OpenH264). Both are offered to receive;
    /// a callee sends the other one when the caller offers only that.
    #[arg(long, value_name = "CODEC", default_value = "vp8")]
    pub video_codec: VideoCodec,
    /// Where the peer's video goes: a .y4m file (the first picture's size), `window` (a
    /// build with the `window` feature, on a desktop), or `null`.
    /// Without it the peer's video is received only when we send video, and dropped.
    #[arg(long, value_name = "FILE.y4m")]
    pub video_output: Option<String>,
}

impl CallArgs {
    fn config(&self) -> anyhow::Result<CallConfig> {
        let input = self.session.input()?;
        let output: OutputSpec = self.output.parse()?;
        let frame: FrameDuration = self
            .frame
            .parse()
            .map_err(|_| anyhow::anyhow!("--frame must be 10ms, 20ms, 40ms or 60ms"))?;
        let mut ice = self.session.ice();
        if !self.stun.is_empty() {
            ice.servers.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn.is_empty() {
            ice.servers.push(IceServer {
                urls: self.turn.clone(),
                username: self.turn_user.clone(),
                credential: self.turn_password.clone(),
            });
        }
        let hang_up_after_input = self.session.tail(&input);
        Ok(CallConfig {
            input,
            output,
            encoder: EncoderConfig {
                bitrate_bps: self.bitrate,
                frame,
                fec: !self.no_fec,
                dtx: !self.no_dtx,
                ..EncoderConfig::default()
            },
            ice,
            max_duration: self.session.duration,
            hang_up_after_input,
            video: self.video.clone(),
            video_codec: self.video_codec,
            video_output: match self.video_output.as_deref() {
                None => None,
                Some("null") => Some(VideoOutput::Null),
                Some("window") => Some(VideoOutput::Sink(
                    sotto_engine::video::window::window_output()?,
                )),
                Some(path) => Some(VideoOutput::Y4m(path.into())),
            },
            ..CallConfig::default()
        })
    }
}

async fn connect(args: &CallArgs, identity: Identity, data_dir: &Path) -> anyhow::Result<Phone> {
    Ok(Phone::new(args.session.connect(identity, data_dir).await?))
}

/// The local conversation store, if this data dir has one (the call's own connection
/// creates it, to publish key packages, after this is read).
pub fn conversations(data_dir: &Path) -> anyhow::Result<Option<Conversations>> {
    if !data_dir.join(STORE_FILE).exists() {
        return Ok(None);
    }
    let identity = Arc::new(Identity::load(
        &data_dir.join(sotto_engine::identity::IDENTITY_FILE),
    )?);
    Ok(Some(Conversations::open(data_dir, identity)?))
}

/// SFrame keys from `group`'s current MLS epoch.
pub fn media_keys(core: &Conversations, group: &GroupId) -> anyhow::Result<Arc<MediaCrypto>> {
    let epoch = core.media_epoch(group)?;
    eprintln!(
        "media: end-to-end encrypted (SFrame, keys from MLS epoch {} of your conversation)",
        epoch.epoch
    );
    Ok(Arc::new(MediaCrypto::new(&epoch, Instant::now())?))
}

/// `sotto call <peer>`: end-to-end encrypted media when we share a conversation with the
/// peer (unless --no-e2ee).
pub async fn call(
    identity: Identity,
    data_dir: &Path,
    peer: &str,
    args: &CallArgs,
) -> anyhow::Result<()> {
    let mut config = args.config()?;
    let peer: IdentityKey = peer
        .parse()
        .map_err(|_| anyhow::anyhow!("{peer:?} is not a Sotto id (see `sotto id show`)"))?;
    let mut chat = None;
    if !args.no_e2ee {
        let direct = match conversations(data_dir)? {
            Some(core) => core.direct_with(&peer)?.map(|group| (core, group)),
            None => None,
        };
        match direct {
            Some((core, group)) => {
                config.e2ee = Some(media_keys(&core, &group)?);
                chat = Some(core);
            }
            None => eprintln!(
                "media: DTLS-SRTP only; you share no conversation with this peer yet (send \
                 them a message with `sotto send` first for end-to-end encrypted calls)"
            ),
        }
    }
    let phone = connect(args, identity, data_dir).await?;
    let handle = phone.call(peer, config)?;
    report(handle, args.json, chat).await
}

/// `sotto answer`: waits for a call (from `from`, if given) and answers it, with the keys
/// of the conversation the caller names when it encrypts media end to end.
pub async fn answer(
    identity: Identity,
    data_dir: &Path,
    from: Option<&str>,
    wait: Duration,
    args: &CallArgs,
) -> anyhow::Result<()> {
    let from: Option<IdentityKey> = from
        .map(|f| f.parse())
        .transpose()
        .map_err(|_| anyhow::anyhow!("--from is not a Sotto id"))?;
    let mut config = args.config()?;
    let mut phone = connect(args, identity, data_dir).await?;
    eprintln!("waiting for a call as {}", phone.identity());
    let incoming = loop {
        let next = tokio::time::timeout(wait, phone.next_incoming())
            .await
            .map_err(|_| anyhow::anyhow!("no call within {}", humantime::format_duration(wait)))?;
        let Some(incoming) = next else {
            bail!("the signaling connection closed");
        };
        match from {
            Some(from) if from != incoming.from => {
                eprintln!("declining a call from {}", incoming.from);
                incoming.decline().await;
            }
            _ => break incoming,
        }
    };
    eprintln!("answering a call from {}", incoming.from);
    let mut chat = None;
    if let Some(asked) = incoming.e2ee().filter(|_| !args.no_e2ee) {
        let group = GroupId::parse(&asked.group);
        let core = conversations(data_dir)?;
        match (core, group) {
            (Some(core), Some(group))
                if core
                    .members(&group)
                    .is_ok_and(|m| m.contains(&incoming.from)) =>
            {
                config.e2ee = Some(media_keys(&core, &group)?);
                chat = Some(core);
                let ours = config.e2ee.as_ref().map_or(0, |c| c.epoch());
                if asked.epoch > ours {
                    eprintln!(
                        "note: the caller is at epoch {}, this device at {ours}: run `sotto inbox` \
                         to catch up if you hear nothing",
                        asked.epoch
                    );
                }
            }
            _ => eprintln!(
                "the caller encrypts media end to end with a conversation this device does not \
                 have (run `sotto inbox` first); the call will fail"
            ),
        }
    }
    let handle = incoming.answer(config).await?;
    report(handle, args.json, chat).await
}

/// Prints states, and messages the peer sends on the call's data channel (decrypted with
/// the conversation in `chat`), until the end (Ctrl-C hangs up); then the summary.
async fn report(
    mut handle: CallHandle,
    json: bool,
    chat: Option<Conversations>,
) -> anyhow::Result<()> {
    let mut hung_up = false;
    // This process's CPU from the first time the call is connected to its end.
    let mut cpu_from: Option<(Instant, f64)> = None;
    let summary: CallSummary = loop {
        let event = tokio::select! {
            event = handle.next_event() => event,
            _ = tokio::signal::ctrl_c(), if !hung_up => {
                hung_up = true;
                handle.hang_up();
                continue;
            }
        };
        match event {
            Some(CallEvent::State(state)) => {
                if state == CallState::Connected && cpu_from.is_none() {
                    cpu_from = process_cpu_seconds().map(|cpu| (Instant::now(), cpu));
                }
                if json {
                    eprintln!("{}", serde_json::json!({ "state": state }));
                } else {
                    eprintln!("call {}: {state:?}", handle.call_id);
                }
            }
            Some(CallEvent::Ended(summary)) => break *summary,
            Some(CallEvent::Message(bytes)) => {
                let Some(core) = &chat else { continue };
                match core.receive(&bytes) {
                    Ok(Received::Message {
                        sender, content, ..
                    }) => {
                        if let Body::Text { text } = content.body {
                            eprintln!("message from {}: {text}", fingerprint(&sender));
                        }
                    }
                    Ok(_) => {}
                    Err(err) => eprintln!("a message on the call was refused: {err}"),
                }
            }
            None => bail!("the call ended without a summary"),
        }
    };
    if !json {
        eprintln!(
            "call {}: ended by {:?}: {}",
            summary.call_id, summary.end.by, summary.end.detail
        );
    }
    let mut printed = serde_json::to_value(&summary)?;
    if let (Some((since, before)), Some(after), Some(fields)) =
        (cpu_from, process_cpu_seconds(), printed.as_object_mut())
    {
        // Whole process (engine, signaling client, file I/O), one core = 100.
        let wall = since.elapsed().as_secs_f64().max(1e-3);
        let percent = ((after - before) / wall * 100.0 * 100.0).round() / 100.0;
        fields.insert("cpu_percent_of_one_core".into(), percent.into());
    }
    println!("{}", serde_json::to_string(&printed)?);
    if !summary.connected {
        bail!("the call did not connect: {}", summary.end.detail);
    }
    Ok(())
}
