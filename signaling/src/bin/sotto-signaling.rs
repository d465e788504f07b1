//! `sotto-signaling`: run the signaling server until SIGINT or SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use sotto_signaling::server::{Config, start};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The TURN relay (medea-turn) logs clients' addresses at info, warn and error: it is
    // silent unless RUST_LOG names it (an operator's explicit choice, for debugging).
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !asked.contains("medea_turn") {
        filter = filter.add_directive(
            "medea_turn=off"
                .parse()
                .context("the TURN relay's log directive")?,
        );
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    let data_dir = config.data_dir.clone();
    let server = start(config)
        .await
        .with_context(|| format!("starting with data dir {}", data_dir.display()))?;
    // The listen address is the operator's own configuration, not a client's address.
    tracing::info!(listen = %server.local_addr(), server_id = server.server_id(), "sotto-signaling ready");
    println!("listening on {}", server.ws_url());
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await.context("shutting down")?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = term.recv() => {}
    }
    Ok(())
}
