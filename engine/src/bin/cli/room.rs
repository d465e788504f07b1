//! `sotto room create` and `sotto room join`: a group call through the room's SFU, with
//! headless flags (`--input speech.wav --video test-pattern --record DIR`). The summary is one JSON line on
//! stdout at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use sotto_engine::call::Phone;
use sotto_engine::call::group::GroupConfig;
use sotto_engine::e2ee::media::MediaCrypto;
use sotto_engine::messaging::{GroupId, history};
use sotto_engine::video::{VideoCodec, VideoSpec};
use sotto_engine::{Identity, SignalingClient};
use sotto_signaling::protocol::{InviteToken, RoomId};

use crate::session::SessionArgs;

/// Flags shared by `room create` and `room join`.
#[derive(Debug, Args)]
pub struct RoomArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Record each participant to DIR/<participant>.wav, and their video to
    /// DIR/<participant>.y4m.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Show each participant's video in a window (a build with the `window` feature, on
    /// a desktop).
    #[arg(long)]
    pub window: bool,
    /// What to show: none, test-pattern (test-pattern:WxH@FPS for another size or rate),
    /// a FILE.y4m played in a loop, or camera / camera:DEVICE. Others' video is received
    /// either way.
    #[arg(long, value_name = "SPEC", default_value = "none")]
    pub video: VideoSpec,
    /// Simulcast layers to send (1-3): the source's size, then halves of it.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub video_layers: u8,
    /// The codec to send video in: vp8 (one multi-resolution encoder), or h264 (one
    /// OpenH264 encoder per layer).
    #[arg(long, value_name = "CODEC", default_value = "vp8")]
    pub video_codec: VideoCodec,
    /// The largest layer wanted of others' video, 0 (smallest) to 2: for a small window,
    /// the SFU then sends less and their encoders stop the layers nobody watches.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub max_layer: Option<u8>,
    /// Encrypt the call end to end with SFrame keyed from this group conversation (its
    /// title or id; see `sotto group list`): the SFU then forwards audio it cannot read.
    /// Everyone in the call must name the same group; streams that do not open under its
    /// keys are dropped.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
}

/// SFrame keys for the call, from `--group`.
fn group_keys(data_dir: &Path, args: &RoomArgs) -> anyhow::Result<Option<Arc<MediaCrypto>>> {
    let Some(name) = &args.group else {
        return Ok(None);
    };
    let core = crate::call::conversations(data_dir)?
        .context("no conversations on this device yet (see `sotto group new`)")?;
    let group = match history::room_by_title(core.conn(), name)? {
        Some(group) => group,
        None => GroupId::parse(name)
            .filter(|g| !g.is_direct())
            .with_context(|| {
                format!("no group titled or with id {name:?} (see `sotto group list`)")
            })?,
    };
    Ok(Some(crate::call::media_keys(&core, &group)?))
}

async fn call(
    client: SignalingClient,
    room: RoomId,
    sfu: sotto_signaling::protocol::IdentityKey,
    args: &RoomArgs,
    e2ee: Option<Arc<MediaCrypto>>,
) -> anyhow::Result<()> {
    let input = args.session.input()?;
    let leave_after_input = args.session.tail(&input);
    let config = GroupConfig {
        record_dir: args.record.clone(),
        ice: args.session.ice(),
        max_duration: args.session.duration,
        leave_after_input,
        e2ee,
        video: args.video.clone(),
        video_layers: usize::from(args.video_layers),
        video_codec: args.video_codec,
        max_quality: args.max_layer,
        video_sink: if args.window {
            Some(sotto_engine::video::window::window_output()?)
        } else {
            None
        },
        ..GroupConfig::new(input)
    };
    let phone = Phone::new(client);
    let summary = phone.group_call(room, sfu, config).await?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// `sotto room create`: makes a group room, prints how to join it, and joins its call.
pub async fn create(
    identity: Identity,
    data_dir: &Path,
    max: Option<u32>,
    args: &RoomArgs,
) -> anyhow::Result<()> {
    let e2ee = group_keys(data_dir, args)?;
    let client = args.session.connect(identity, data_dir).await?;
    let invite = client.create_group_room(max).await?;
    let sfu = invite.sfu.context("the server gave the room no SFU")?;
    eprintln!(
        "room created; others join with:\n  sotto room join {} {}",
        invite.room_id, invite.invite_token.0
    );
    call(client, invite.room_id, sfu, args, e2ee).await
}

/// `sotto room join <room> <token>`.
pub async fn join(
    identity: Identity,
    data_dir: &Path,
    room: &str,
    token: &str,
    args: &RoomArgs,
) -> anyhow::Result<()> {
    let e2ee = group_keys(data_dir, args)?;
    let client = args.session.connect(identity, data_dir).await?;
    let room = RoomId(room.to_owned());
    let (_, sfu) = client
        .join_group_room(&room, &InviteToken(token.to_owned()))
        .await
        .context("joining the room")?;
    let sfu = sfu.context("the room has no SFU: it is not a group room")?;
    call(client, room, sfu, args, e2ee).await
}
