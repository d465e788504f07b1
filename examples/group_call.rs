//! `cargo run -p sotto-examples --example group_call`: signaling and the SFU in-process,
//! one engine per input WAV (the three reference speech files by default). Everyone
//! publishes through the SFU and records everyone else to `--out DIR/<name>/<id>.wav`;
//! prints one JSON line per participant.

use std::path::PathBuf;

use clap::Parser;

/// A group call through the SFU between engines in this process.
#[derive(Debug, Parser)]
struct Args {
    /// One WAV file per participant.
    #[arg(long = "input", num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// Where the recordings go.
    #[arg(long, default_value = "group-call")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.inputs.is_empty() {
        args.inputs = sotto_examples::group_demo::reference_inputs();
    }
    for heard in sotto_examples::group_demo::run(&args.inputs, &args.out).await? {
        println!("{}", heard.to_json());
    }
    Ok(())
}
