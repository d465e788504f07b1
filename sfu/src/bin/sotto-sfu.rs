//! `sotto-sfu`: the selective forwarding unit. It registers with a signaling server as an
//! SFU (proving the shared secret), takes the group rooms signaling assigns it, and
//! forwards each participant's audio to the others over one UDP port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use sotto_signaling::client::{ClientConfig, KeyAuthenticator, SignalingClient};

/// Sotto's selective forwarding unit.
#[derive(Debug, Parser)]
#[command(name = "sotto-sfu", version, about)]
struct Args {
    /// UDP address every participant's media uses.
    #[arg(long, env = "SOTTO_SFU_LISTEN_UDP", default_value = "0.0.0.0:5000")]
    listen_udp: SocketAddr,
    /// The address put in ICE candidates, when it differs from --listen-udp (a wildcard
    /// listen address, NAT).
    #[arg(long, env = "SOTTO_SFU_PUBLIC_ADDR")]
    public_addr: Option<SocketAddr>,
    /// The signaling server's WebSocket URL.
    #[arg(
        long,
        env = "SOTTO_SFU_SIGNALING",
        default_value = "ws://127.0.0.1:7000/v1/ws"
    )]
    signaling: String,
    /// The file holding the secret shared with signaling (its --sfu-secret-file).
    #[arg(long, env = "SOTTO_SFU_SECRET_FILE")]
    secret_file: PathBuf,
    /// In rooms with more audio publishers, forward only the loudest this many.
    #[arg(long, env = "SOTTO_SFU_LAST_N", default_value_t = sotto_sfu::core::DEFAULT_LAST_N)]
    last_n: usize,
    /// A file holding this SFU's signing key (32 bytes; created 0600 if missing), so a
    /// restarted SFU keeps the rooms assigned to it. Without it, each start is a new SFU.
    #[arg(long, env = "SOTTO_SFU_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Send workers: forwarded media leaves through this many threads, side by side on
    /// the one UDP port, each serving a share of the subscribers. Default 1: the driver
    /// sends itself (on 2 vCPUs two threads forwarded a fifth less per CPU-second).
    #[arg(long, env = "SOTTO_SFU_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Where /health and /metrics are served.
    #[arg(long, env = "SOTTO_SFU_HTTP", default_value = "127.0.0.1:7100")]
    http: SocketAddr,
}

/// With the `dhat-heap` feature every allocation is recorded, for a heap profile.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Written to dhat-heap.json when main returns (Ctrl-C).
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let secret = std::fs::read(&args.secret_file)
        .with_context(|| format!("reading {}", args.secret_file.display()))?
        .trim_ascii()
        .to_vec();
    if args.public_addr.is_none() && args.listen_udp.ip().is_unspecified() {
        anyhow::bail!("--listen-udp is a wildcard address: give --public-addr for the candidates");
    }

    let workers = args
        .workers
        .map_or_else(sotto_sfu::driver::default_workers, usize::from);
    let running = sotto_sfu::driver::start_with_workers(args.listen_udp, args.public_addr, workers)
        .await
        .with_context(|| format!("binding {}", args.listen_udp))?;
    running.handle.with(|s| s.set_last_n(args.last_n));
    let key = match &args.key_file {
        Some(path) => load_or_create_key(path)?,
        // A fresh identity per start: signaling assigns rooms to whoever is registered.
        None => ed25519_dalek::SigningKey::from_bytes(&rand::random()),
    };
    let mut config = ClientConfig::new(&args.signaling);
    config.sfu_secret = Some(secret);
    let client = SignalingClient::connect(
        config,
        Arc::new(KeyAuthenticator::new(key, Some("sfu".into()))),
    )
    .await
    .with_context(|| format!("registering with {}", args.signaling))?;
    println!(
        "sotto-sfu: media on udp {}, registered with {}, http on {}",
        running.handle.local_addr(),
        args.signaling,
        args.http
    );
    let http = tokio::spawn(sotto_sfu::http::serve(args.http, running.handle.clone()));
    let (sender, events) = client.split();
    tokio::select! {
        _ = sotto_sfu::control::run(sender, events, running.handle.clone(), running.signals) => {
            anyhow::bail!("the signaling connection ended");
        }
        served = http => {
            served??;
            anyhow::bail!("the HTTP server stopped");
        }
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Reads the 32-byte key in `path`, or creates one there readable by the owner only.
fn load_or_create_key(path: &std::path::Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::read(path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} does not hold a 32-byte key", path.display()))?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(&seed)?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}
