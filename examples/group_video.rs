//! `cargo run --release -p sotto-examples --example group_video`: signaling, the SFU and
//! four engines in this process, a group video call end-to-end encrypted (the four form
//! an MLS group first). Each speaks one of the reference speech files and shows the
//! moving test pattern (640x360 at 30 fps, three simulcast layers) for 20 s. Prints one
//! JSON line per participant: per sender, frames received and decoded, fps, freezes,
//! resolution and layer switches, PSNR and SSIM against the source pictures (matched by
//! the frame code drawn into each), and glass-to-glass delay p50/p95; and what its own
//! encoder and decoders cost.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sotto_engine::video::{VideoCodec, VideoSpec};
use sotto_examples::group_demo::{self, Options};

/// A group video call through the SFU between engines in this process.
#[derive(Debug, Parser)]
struct Args {
    /// Participants (each speaks one of the reference files, in turn).
    #[arg(long, default_value_t = 4)]
    participants: usize,
    /// What each shows: test-pattern[:WxH[@FPS]] or a FILE.y4m (only the test pattern
    /// is scored).
    #[arg(long, default_value = "test-pattern")]
    video: VideoSpec,
    /// The codec everyone sends in: vp8 (one multi-resolution encoder) or h264 (one
    /// OpenH264 encoder per layer).
    #[arg(long, default_value = "vp8")]
    video_codec: VideoCodec,
    /// How long the call lasts, s.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Score one received picture in this many (PSNR and SSIM take a few ms each; a
    /// picture that comes while the scorer is busy is skipped).
    #[arg(long, default_value_t = 5)]
    score_every: u64,
    /// Record each participant's video too (Y4M: large).
    #[arg(long)]
    record_video: bool,
    /// Without end-to-end encryption (the SFU can then read the media).
    #[arg(long)]
    no_e2ee: bool,
    /// Where the recordings go.
    #[arg(long, default_value = "group-video")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let speech = group_demo::reference_inputs();
    let inputs = (0..args.participants.max(2))
        .map(|i| speech[i % speech.len()].clone())
        .collect();
    let options = Options {
        video: args.video,
        video_codec: args.video_codec,
        record_video: args.record_video,
        e2ee: !args.no_e2ee,
        duration: Some(Duration::from_secs(args.seconds)),
        score_every: args.score_every,
        ..Options::audio(inputs, args.out)
    };
    for heard in group_demo::run_with(&options).await? {
        println!("{}", heard.to_json());
    }
    Ok(())
}
