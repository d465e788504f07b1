//! `sotto-bench`: Sotto's whole-system benchmarks.
//!
//! Today the signaling load benches (see `benches/signaling.sh`, which builds release,
//! pins this process to CPU 1 and raises the open-files limit):
//!
//! ```text
//! taskset -c 1 target/release/sotto-bench signaling-idle --connections 10000
//! taskset -c 1 target/release/sotto-bench signaling-relay --rate 5000 --duration 10s
//! ```
//!
//! Each starts the real `sotto-signaling` binary as a child pinned to CPU 0, measures,
//! stops it, and prints a human summary (and a JSON line with `--json`). Also `sfu-load`,
//! and the call-quality bench (see BENCHMARKS.md):
//!
//! ```text
//! target/release/sotto-bench run benches/scenarios/*.toml --seeds 3 --out DIR [--peer chromium]
//! target/release/sotto-bench relay --listen A --target B --scenario F --seed N --duration T
//! ```
//!
//! And our jitter buffer against the `neteq` crate on the same packet traces:
//!
//! ```text
//! target/release/sotto-bench jitter-compare --out DIR [--speech FILE ...] [--seeds 2]
//! ```

mod janus;
mod sfu_load;
mod signaling;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use sotto_bench::relay::{Relay, RelayConfig};
use sotto_bench::scenario::Scenario;

use signaling::client::ClientKind;
use signaling::idle::{self, IdleOptions};
use signaling::relay::{self, RelayOptions};
use signaling::server::ServerSpec;

/// Sotto's whole-system benchmarks. Run them on a quiet machine; see BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "sotto-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// How many idle authenticated connections one signaling server holds, and its RSS.
    SignalingIdle(IdleArgs),
    /// Relay latency between two clients at a steady message rate.
    SignalingRelay(RelayArgs),
    /// SFU forwarding load: publishers and subscribers with real DTLS-SRTP legs.
    SfuLoad(SfuLoadArgs),
    /// A UDP relay that puts a scenario's impairments between two real endpoints: A sends
    /// to --listen, the relay forwards to --target; replies come back the same way.
    Relay(UdpRelayArgs),
    /// Call quality: a real one-to-one call per scenario and seed through the relay, scored
    /// (PESQ, STOI, mouth-to-ear delay, E-model, jitter buffer); DIR/results.json and
    /// DIR/report.md.
    Run(RunArgs),
    /// Our jitter buffer against the crates.io `neteq` crate: the same packet traces
    /// (speech x paths x seeds) through both receive sides, each output scored by
    /// benches/userstyle/score.py; DIR/jitter-compare.json and DIR/jitter-compare.md. The
    /// neteq side runs in real time (it reads the wall clock): minutes.
    JitterCompare(JitterCompareArgs),
}

#[derive(Debug, Args)]
struct JitterCompareArgs {
    /// Where the WAV files, jitter-compare.json and jitter-compare.md go.
    #[arg(long)]
    out: PathBuf,
    /// Speech files, 48 kHz mono 16-bit WAV (default: benches/data/speech-*.wav).
    #[arg(long, num_args = 1..)]
    speech: Vec<PathBuf>,
    /// Seeds per speech file and path (1, 2, ... N).
    #[arg(long, default_value_t = 2)]
    seeds: u64,
    /// A Python with pesq (`bash benches/setup-scoring.sh` makes one).
    #[arg(long, default_value = "target/bench-venv/bin/python")]
    python: PathBuf,
    /// How the neteq side gets the RFC 2198 copies: `all` (every copy as a packet of its
    /// own, as WebRTC's RED splitter does), `unseen` (only frames not inserted before);
    /// repeat or comma-separate for one neteq run per policy.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    neteq_copies: Vec<sotto_bench::jitter_compare::CopyPolicy>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario files (benches/scenarios/*.toml).
    #[arg(required = true)]
    scenarios: Vec<PathBuf>,
    /// Where the recordings, results.json and report.md go.
    #[arg(long)]
    out: PathBuf,
    /// Seeds per scenario (1, 2, ... N).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// The reference speech the caller plays (48 kHz mono 16-bit WAV). With several
    /// (`--input A B ...` after the scenarios, since it takes every file that follows; e.g.
    /// the report set of benches/speech/make-report-set.sh), seed k plays the k-th,
    /// cycling: `--seeds` a multiple of their number plays each equally.
    #[arg(long, num_args = 1.., default_value = "benches/data/speech-en-us-1.wav")]
    input: Vec<PathBuf>,
    /// A Python with pesq and pystoi (`bash benches/setup-scoring.sh` makes one and prints
    /// its path); without it, no PESQ or STOI.
    #[arg(long, default_value = "target/bench-venv/bin/python")]
    python: PathBuf,
    /// `chromium`: also run every scenario and seed between two headless Chromium pages,
    /// through the same relay, scored the same way (needs root, chromium, Node.js and
    /// `npm ci` in examples/tests/browser).
    #[arg(long, value_enum, default_value = "sotto")]
    peer: sotto_bench::quality::Peer,
    /// Run each scenario as a group call of this many engines through an in-process SFU
    /// (one speaks, the others listen; every leg through the relay) instead of one-to-one.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=32))]
    group: Option<u32>,
    /// The Chromium binary for `--peer chromium`.
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    /// Sotto's Opus decoder complexity: 5 and up conceal with deep PLC and decode DRED;
    /// 0..=4 are classic concealment; 6 and 7 (the default) add LACE and NoLACE.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=10))]
    decoder_complexity: Option<u8>,
    /// DRED Sotto's sender carries once loss is reported, in 10 ms units (default 0: none;
    /// 12 is what the engine would use).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=104))]
    dred_units: Option<u8>,
    /// The speaker also sends the test pattern (640x360 at 30 fps: one stream one-to-one,
    /// three simulcast layers with `--group`), each listener scores the video it decodes
    /// (fps, freezes, layer switches, PSNR/SSIM against the source, delay), in a second
    /// table of the report.
    #[arg(long)]
    video: bool,
    /// The codec of the speaker's video with `--video` (Sotto only): vp8 or h264.
    #[arg(long, default_value = "vp8")]
    video_codec: sotto_engine::video::VideoCodec,
}

#[derive(Debug, Args)]
struct UdpRelayArgs {
    /// Where endpoint A sends.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    /// Endpoint B.
    #[arg(long)]
    target: std::net::SocketAddr,
    /// The local address to send to B from.
    #[arg(long, default_value = "0.0.0.0:0")]
    via: std::net::SocketAddr,
    /// A scenario file (benches/scenarios/*.toml); without it, the flags below.
    #[arg(long, conflicts_with_all = ["loss", "delay_ms"])]
    scenario: Option<PathBuf>,
    /// Uniform loss in each direction, as a fraction (0.1 = 10 %).
    #[arg(long)]
    loss: Option<f64>,
    /// One-way delay in each direction, ms.
    #[arg(long)]
    delay_ms: Option<f64>,
    /// The seed of the forward link (the backward one uses the next).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this long (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Print the report as one JSON line too.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SfuLoadArgs {
    /// The `sotto-sfu` binary (build it with --release).
    #[arg(long, default_value = "target/release/sotto-sfu")]
    sfu_bin: PathBuf,
    /// CPU list for `taskset -c` when starting the SFU; `none` leaves it unpinned.
    #[arg(long, default_value = "0")]
    sfu_cpu: String,
    /// The SFU's send workers (its --workers; its default is 1).
    #[arg(long)]
    sfu_workers: Option<u16>,
    /// Run the SFU in a network namespace of its own, over a veth pair (needs root).
    #[arg(long)]
    veth: bool,
    /// Then run the same load against Janus 1.1's VideoRoom (Debian's `janus` package),
    /// started the same way, and report both.
    #[arg(long)]
    janus: bool,
    /// Janus's event loops (its `event_loops`); 0 gives each handle a thread of its own,
    /// Janus's default.
    #[arg(long, default_value_t = 1)]
    janus_loops: u16,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Audio publishers per room (50 packets a second each).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribers per room.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// How long to measure (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Print the report as one JSON line too.
    #[arg(long)]
    json: bool,
}

/// The server under test.
#[derive(Debug, Args)]
struct ServerArgs {
    /// The `sotto-signaling` binary (build it with --release).
    #[arg(long, default_value = "target/release/sotto-signaling")]
    server_bin: PathBuf,
    /// CPU list for `taskset -c` when starting the server; `none` leaves it unpinned.
    #[arg(long, default_value = "0")]
    server_cpu: String,
    /// The server's --ws-buffer-bytes (its default when absent).
    #[arg(long)]
    ws_buffer_bytes: Option<usize>,
    /// Another argument for the server (repeatable), e.g. --server-arg=--ping-interval=5s.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Print the report as one JSON line too.
    #[arg(long)]
    json: bool,
}

impl ServerArgs {
    fn spec(&self, max_connections: usize, rate_per_sec: u32, rate_burst: u32) -> ServerSpec {
        ServerSpec {
            bin: self.server_bin.clone(),
            cpu: (self.server_cpu != "none").then(|| self.server_cpu.clone()),
            max_connections,
            rate_per_sec,
            rate_burst,
            ws_buffer_bytes: self.ws_buffer_bytes,
            extra_args: self.server_args.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Which client holds the connections.
    #[arg(long, value_enum, default_value_t = ClientKind::Engine)]
    client: ClientKind,
    /// Pause after the last connection before measuring (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    settle: Duration,
    /// Also record RSS when this many connections are open (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,2500,5000,7500")]
    checkpoints: Vec<usize>,
}

#[derive(Debug, Args)]
struct RelayArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Messages per second from A to B.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// How long to measure (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// How long to send before measuring.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// A's send tick; each tick sends what is due (5 messages per 1 ms at 5,000/s).
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    tick: Duration,
    /// Idle authenticated connections to hold during the run.
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// Which client holds them.
    #[arg(long, value_enum, default_value_t = ClientKind::Engine)]
    client: ClientKind,
    /// Handshakes in flight at once while opening them.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The server's per-connection --rate-per-sec (default: twice --rate).
    #[arg(long)]
    rate_per_sec: Option<u32>,
    /// The server's per-connection --rate-burst (default: --rate).
    #[arg(long)]
    rate_burst: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs of the in-process engines and SFU, to stderr: RUST_LOG, warnings by default.
    // Thread ids tell the engines apart (each call's playout has its own thread).
    tracing_subscriber::fmt()
        .with_thread_ids(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::SignalingIdle(args) => {
            if args.connections == 0 {
                bail!("--connections must be at least 1");
            }
            let options = IdleOptions {
                server: args.server.spec(args.connections.max(20_000) + 16, 50, 100),
                connections: args.connections,
                concurrency: args.concurrency,
                client: args.client,
                settle: args.settle,
                checkpoints: args.checkpoints,
            };
            eprintln!(
                "signaling-idle: opening {} connections",
                options.connections
            );
            let report = idle::run(&options).await?;
            println!("{report}");
            if args.server.json {
                println!("{}", serde_json::to_string(&report).context("JSON report")?);
            }
        }
        Command::SignalingRelay(args) => {
            if args.rate == 0 || args.tick.is_zero() {
                bail!("--rate and --tick must be positive");
            }
            let options = RelayOptions {
                server: args.server.spec(
                    args.idle_connections.max(20_000) + 16,
                    args.rate_per_sec.unwrap_or(args.rate.saturating_mul(2)),
                    args.rate_burst.unwrap_or(args.rate),
                ),
                rate: args.rate,
                duration: args.duration,
                warmup: args.warmup,
                tick: args.tick,
                idle_connections: args.idle_connections,
                idle_client: args.client,
                concurrency: args.concurrency,
                drain: Duration::from_secs(5),
            };
            eprintln!(
                "signaling-relay: {}/s for {:?} (+{:?} warm-up), {} idle connections",
                options.rate, options.duration, options.warmup, options.idle_connections
            );
            let report = relay::run(&options).await?;
            println!("{report}");
            if args.server.json {
                println!("{}", serde_json::to_string(&report).context("JSON report")?);
            }
        }
        Command::SfuLoad(args) => {
            let options = sfu_load::LoadOptions {
                sfu_bin: args.sfu_bin,
                sfu_cpu: (args.sfu_cpu != "none").then_some(args.sfu_cpu),
                sfu_workers: args.sfu_workers,
                janus_loops: args.janus_loops,
                veth: args.veth,
                rooms: args.rooms,
                publishers: args.publishers,
                subscribers: args.subscribers,
                duration: args.duration,
            };
            eprintln!(
                "sfu-load: {} room(s) x ({} publishers, {} subscribers), {:?}",
                options.rooms, options.publishers, options.subscribers, options.duration
            );
            let mut targets = vec![sfu_load::Target::Sotto];
            if args.janus {
                targets.push(sfu_load::Target::Janus);
            }
            let mut failures = Vec::new();
            for target in targets {
                let report = sfu_load::run(&options, target).await?;
                println!("{report:#?}");
                if args.json {
                    println!("{}", serde_json::to_string(&report).context("JSON report")?);
                }
                failures.extend(report.setup_failure);
            }
            if !failures.is_empty() {
                bail!("{}", failures.join("\n"));
            }
        }
        Command::Run(args) => run_quality(args).await?,
        Command::JitterCompare(args) => {
            let speech = if args.speech.is_empty() {
                default_speech()?
            } else {
                args.speech
            };
            let options = sotto_bench::jitter_compare::Options {
                out: args.out,
                speech,
                seeds: args.seeds,
                python: args.python,
                neteq_copies: args.neteq_copies,
            };
            // Blocking and long (real time); nothing else runs on the runtime meanwhile.
            let report =
                tokio::task::spawn_blocking(move || sotto_bench::jitter_compare::run(&options))
                    .await
                    .context("the jitter comparison panicked")??;
            println!("{report}");
        }
        Command::Relay(args) => {
            let (forward, backward) = match &args.scenario {
                Some(path) => Scenario::load(path)?.directions(),
                None => {
                    let both = sotto_netsim::Impairment {
                        loss: args.loss.map_or(sotto_netsim::Loss::None, |rate| {
                            sotto_netsim::Loss::Uniform { rate }
                        }),
                        delay_ms: args.delay_ms.unwrap_or(0.0),
                        ..Default::default()
                    };
                    (both.clone(), both)
                }
            };
            let relay = Relay::bind(RelayConfig {
                listen: args.listen,
                target: args.target,
                via: args.via,
                forward,
                backward,
                seed: args.seed,
                duration: args.duration,
            })
            .await
            .with_context(|| format!("binding {} and {}", args.listen, args.via))?;
            eprintln!(
                "relay: {} -> {} (from {}) for {:?}",
                relay.listen_addr()?,
                args.target,
                relay.via_addr()?,
                args.duration
            );
            let report = relay.run().await?;
            println!("{report:#?}");
            if args.json {
                println!("{}", serde_json::to_string(&report).context("JSON report")?);
            }
        }
    }
    Ok(())
}

/// `sotto-bench run`.
async fn run_quality(args: RunArgs) -> anyhow::Result<()> {
    use sotto_bench::chromium::ChromiumPeer;
    use sotto_bench::quality::{self, Peer, Scoring};
    let scenarios = args
        .scenarios
        .iter()
        .map(|path| Scenario::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let python = args.python.exists().then(|| args.python.clone());
    if python.is_none() {
        eprintln!(
            "note: {} not found: no PESQ or STOI (run `bash benches/setup-scoring.sh`)",
            args.python.display()
        );
    }
    let scoring = Scoring {
        python,
        script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("score.py"),
    };
    let data = tempfile::tempdir().context("a data dir for signaling")?;
    let server = sotto_signaling::server::start(sotto_signaling::server::Config::new(
        "127.0.0.1:0".parse()?,
        data.path(),
    ))
    .await
    .context("starting signaling")?;
    let chromium = match args.peer {
        Peer::Sotto => None,
        Peer::Chromium => Some(ChromiumPeer::new(
            args.chromium.clone(),
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("chromium/pair.mjs"),
            args.video,
        )?),
    };
    let peers: &[Peer] = match chromium {
        None => &[Peer::Sotto],
        Some(_) => &[Peer::Sotto, Peer::Chromium],
    };
    let total = scenarios.len() as u64 * args.seeds * peers.len() as u64;
    // A bar on stderr while it runs (hidden when stderr is not a terminal).
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} calls, {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let defaults = quality::Tuning::default();
    let tuning = quality::Tuning {
        decoder_complexity: args
            .decoder_complexity
            .unwrap_or(defaults.decoder_complexity),
        dred_units: args.dred_units.unwrap_or(defaults.dred_units),
        video: args.video,
        video_codec: args.video_codec,
    };
    let mut results = Vec::new();
    let mut failures = Vec::new();
    let mut attempts = Vec::new();
    for scenario in &scenarios {
        for seed in 1..=args.seeds {
            let input = &args.input[(seed as usize - 1) % args.input.len()];
            for &peer in peers {
                let name = format!("{} {} seed {seed}", scenario.name, peer.name());
                bar.set_message(name.clone());
                let result = match (peer, &chromium, args.group) {
                    (Peer::Chromium, Some(browser), _) => browser
                        .run_call(scenario, seed, input, &args.out, &scoring)
                        .await
                        .map(|result| vec![result]),
                    (_, _, Some(n)) => {
                        sotto_bench::group::run_group_call(
                            scenario, seed, n as usize, input, &args.out, &scoring, &tuning,
                        )
                        .await
                    }
                    _ => quality::run_call(
                        &server, scenario, seed, input, &args.out, &scoring, &tuning,
                    )
                    .await
                    .map(|result| vec![result]),
                };
                bar.inc(1);
                let tried = match args.group {
                    Some(n) if peer == Peer::Sotto => {
                        sotto_bench::group::group_name(&scenario.name, n as usize)
                    }
                    _ => scenario.name.clone(),
                };
                attempts.push(quality::Attempt::new(
                    &tried,
                    peer,
                    seed,
                    result.as_ref().err(),
                ));
                match result {
                    Ok(calls) => {
                        for result in calls {
                            // suspend, not println: println prints nothing when the bar is
                            // hidden (logs).
                            bar.suspend(|| {
                                eprintln!(
                                    "{name}: PESQ-WB {:?}, mouth-to-ear {:?} ms, loss {} %, \
                                     sender at {} bit/s",
                                    result.pesq_wb,
                                    result.mouth_to_ear_ms,
                                    result.loss_percent,
                                    result.final_bitrate_bps,
                                )
                            });
                            results.push(result);
                        }
                    }
                    Err(err) => {
                        // A call that fails (say, its setup lost to a burst) is reported,
                        // not the end of the run.
                        bar.suspend(|| eprintln!("{name}: {err:#}"));
                        failures.push(format!("{name}: {err:#}"));
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    server.shutdown().await?;
    let records: Vec<_> = results.iter().flat_map(|r| r.records()).collect();
    let json = args.out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&records)?)
        .with_context(|| format!("writing {}", json.display()))?;
    // Everything per call, timelines included (for charts and digging).
    let calls = args.out.join("calls.json");
    std::fs::write(&calls, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", calls.display()))?;
    let tried = args.out.join("attempts.json");
    std::fs::write(&tried, serde_json::to_string_pretty(&attempts)?)
        .with_context(|| format!("writing {}", tried.display()))?;
    let mut report = quality::report_markdown(&results);
    // Every datagram crosses the relay, impaired from the first (STUN and DTLS included)
    // in both directions, as a kernel drop rule would: setup is part of what is measured.
    report.push_str("\nSetup (every call tried; setup over the calls scored):\n\n");
    report.push_str(&quality::setup_markdown(&attempts, &results));
    if args.input.len() > 1 {
        report.push_str("\nSpeech by seed (cycling):\n\n");
        for (i, input) in args.input.iter().enumerate() {
            report.push_str(&format!("- seed {}: {}\n", i + 1, input.display()));
        }
    }
    if !failures.is_empty() {
        report.push_str("\nCalls that failed:\n\n");
        for failure in &failures {
            report.push_str(&format!("- {failure}\n"));
        }
    }
    match sotto_bench::charts::draw_all(&args.out, &scenarios, &results) {
        Ok(files) => eprintln!("drew {} charts in {}", files.len(), args.out.display()),
        Err(err) => eprintln!("note: no charts: {err:#}"),
    }
    let md = args.out.join("report.md");
    std::fs::write(&md, &report).with_context(|| format!("writing {}", md.display()))?;
    println!("{report}");
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(())
}

/// benches/data/speech-*.wav, sorted.
fn default_speech() -> anyhow::Result<Vec<PathBuf>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("speech-") && n.ends_with(".wav")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `10s`, `1500ms`, `250us`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 10s or 500ms)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (s, ms, us, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "sotto-bench",
            "signaling-relay",
            "--rate",
            "5000",
            "--duration",
            "10s",
            "--server-arg=--ping-interval=5s",
        ])
        .unwrap();
        let Command::SignalingRelay(args) = cli.command else {
            panic!("wrong subcommand");
        };
        assert_eq!(args.server.server_args, ["--ping-interval=5s"]);
        assert_eq!(args.rate, 5000);
        let cli = Cli::try_parse_from([
            "sotto-bench",
            "jitter-compare",
            "--out",
            "/tmp/jc",
            "--speech",
            "a.wav",
            "b.wav",
            "--neteq-copies",
            "all,unseen",
        ])
        .unwrap();
        let Command::JitterCompare(args) = cli.command else {
            panic!("wrong subcommand");
        };
        assert_eq!(args.speech.len(), 2);
        assert_eq!(args.seeds, 2);
        assert_eq!(args.neteq_copies.len(), 2);
    }
}
