//! `cargo run -p sotto-examples --example one_to_one_voice`: signaling in-process, two
//! engines, a real WebRTC voice call over loopback. Alice plays `--input` (a WAV file),
//! Bob's side writes what it hears to `--output`; prints one JSON line with both call
//! summaries and the measured delay and correlation.

use std::path::PathBuf;

use clap::Parser;
use sotto_engine::audio::codec::EncoderConfig;

/// A one-to-one voice call between two engines in this process.
#[derive(Debug, Parser)]
struct Args {
    /// What Alice says: a WAV file.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/data/speech-en-us-1.wav"))]
    input: PathBuf,
    /// Where Bob's side writes what it hears (48 kHz mono WAV).
    #[arg(long, default_value = "received.wav")]
    output: PathBuf,
    /// Opus start bitrate, bit/s.
    #[arg(long, default_value_t = 32_000)]
    bitrate: u32,
    /// Opus encoder complexity, 0-10 (see BENCHMARKS.md for its cost and quality).
    #[arg(long)]
    complexity: Option<u8>,
    /// Opus decoder complexity, 0-10 (5: deep PLC, 6: + LACE, 7: + NoLACE).
    #[arg(long)]
    decoder_complexity: Option<u8>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut encoder = EncoderConfig {
        bitrate_bps: args.bitrate,
        ..EncoderConfig::default()
    };
    if let Some(complexity) = args.complexity {
        encoder.complexity = complexity;
    }
    let call = sotto_examples::voice_demo::run(
        &args.input,
        &args.output,
        encoder,
        args.decoder_complexity,
    )
    .await?;
    println!("{}", call.to_json());
    Ok(())
}
