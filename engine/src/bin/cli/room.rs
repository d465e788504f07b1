//! `sotto room create` and `sotto room join`: a group call through the room's SFU, with
//! headless flags (`--input speech.wav --record DIR`). The summary is one JSON line on
//! stdout at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sotto_engine::audio::InputSpec;
use sotto_engine::audio::codec::EncoderConfig;
use sotto_engine::call::group::GroupConfig;
use sotto_engine::call::{IceConfig, Phone};
use sotto_engine::{ClientConfig, Identity, SignalingClient};
use sotto_signaling::protocol::{InviteToken, RoomId};

/// Flags shared by `room create` and `room join`.
#[derive(Debug, Args)]
pub struct RoomArgs {
    /// The signaling server's WebSocket URL.
    #[arg(
        long,
        env = "SOTTO_SERVER",
        default_value = "ws://127.0.0.1:7000/v1/ws"
    )]
    pub server: String,
    /// Audio in: `default`, `device:NAME`, a .wav file, `tone:440` or `silence`.
    #[arg(long, default_value = "default", value_name = "SPEC")]
    pub input: String,
    /// Record each participant to DIR/<participant>.wav.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Leave after this long (e.g. `30s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// When the input is a file, leave this long after it ends.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub after_input: Duration,
    /// Local addresses for host candidates (`127.0.0.1:0` allows loopback).
    #[arg(long, value_name = "ADDR")]
    pub bind: Vec<String>,
}

async fn call(
    client: SignalingClient,
    room: RoomId,
    sfu: sotto_signaling::protocol::IdentityKey,
    args: &RoomArgs,
) -> anyhow::Result<()> {
    let input: InputSpec = args.input.parse()?;
    let is_file = matches!(input, InputSpec::Wav(_));
    let mut ice = IceConfig::default();
    if !args.bind.is_empty() {
        ice.bind = args.bind.clone();
    }
    let config = GroupConfig {
        input,
        record_dir: args.record.clone(),
        encoder: EncoderConfig::default(),
        jitter: Default::default(),
        ice,
        max_duration: args.duration,
        leave_after_input: is_file.then_some(args.after_input),
    };
    let phone = Phone::new(client);
    let summary = phone.group_call(room, sfu, config).await?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

async fn connect(identity: Identity, args: &RoomArgs) -> anyhow::Result<SignalingClient> {
    SignalingClient::connect(ClientConfig::new(&args.server), Arc::new(identity))
        .await
        .with_context(|| format!("connecting to {}", args.server))
}

/// `sotto room create`: makes a group room, prints how to join it, and joins its call.
pub async fn create(identity: Identity, max: Option<u32>, args: &RoomArgs) -> anyhow::Result<()> {
    let client = connect(identity, args).await?;
    let invite = client.create_group_room(max).await?;
    let sfu = invite.sfu.context("the server gave the room no SFU")?;
    eprintln!(
        "room created; others join with:\n  sotto room join {} {}",
        invite.room_id, invite.invite_token.0
    );
    call(client, invite.room_id, sfu, args).await
}

/// `sotto room join <room> <token>`.
pub async fn join(
    identity: Identity,
    room: &str,
    token: &str,
    args: &RoomArgs,
) -> anyhow::Result<()> {
    let client = connect(identity, args).await?;
    let room = RoomId(room.to_owned());
    let (_, sfu) = client
        .join_group_room(&room, &InviteToken(token.to_owned()))
        .await
        .context("joining the room")?;
    let sfu = sfu.context("the room has no SFU: it is not a group room")?;
    call(client, room, sfu, args).await
}
