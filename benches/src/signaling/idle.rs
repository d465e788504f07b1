//! The idle-connection bench: how many authenticated WebSocket connections one server
//! process holds, and what they cost it in resident memory.
//!
//! Order: start the server, measure its RSS with no connection, open the connections in
//! stages (RSS after each), let things settle, then read RSS and peak RSS from `/proc`
//! and check on `/metrics` that every connection is still authenticated.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::client::{ClientKind, Fleet, OpenReport};
use super::procfs::{self, ProcStatus};
use super::server::{ServerProcess, ServerSpec};
use super::{Pinning, mib};

/// What to run.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// The server and its flags.
    pub server: ServerSpec,
    /// Connections to open.
    pub connections: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Which client holds them.
    pub client: ClientKind,
    /// Pause between the last connection and the measurement.
    pub settle: Duration,
    /// Connection counts at which to record RSS on the way up.
    pub checkpoints: Vec<usize>,
}

/// RSS at one point of the ramp.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    /// Connections open then.
    pub connections: usize,
    /// Server RSS then, in KiB.
    pub rss_kib: u64,
    /// Seconds since the first connection was started.
    pub elapsed_secs: f64,
}

/// The result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleReport {
    /// The server's command line.
    pub server_command: String,
    /// Where each side ran.
    pub pinning: Pinning,
    /// Which client held the connections.
    pub client: ClientKind,
    /// Connections asked for.
    pub requested: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// How opening went.
    pub open: OpenReport,
    /// Server memory before any connection.
    pub baseline: ProcStatus,
    /// Server memory after settling with every connection open.
    pub loaded: ProcStatus,
    /// (loaded RSS - baseline RSS) / connections held, in KiB.
    pub rss_per_connection_kib: f64,
    /// `sotto_signaling_authenticated_connections` after settling.
    pub authenticated: f64,
    /// `sotto_signaling_connections` after settling.
    pub open_connections: f64,
    /// `sotto_signaling_connections_accepted_total`.
    pub accepted: f64,
    /// `sotto_signaling_connections_refused_total`, all reasons.
    pub refused: f64,
    /// Connections the client saw drop.
    pub dropped: usize,
    /// Server CPU time spent while the connections were opened, in seconds.
    pub server_cpu_open_secs: f64,
    /// RSS on the way up.
    pub stages: Vec<Stage>,
    /// The bench process's own memory at the end.
    pub client_status: ProcStatus,
    /// Seconds the server took to shut down gracefully with the connections closed.
    pub shutdown_secs: Option<f64>,
}

/// Run it.
pub async fn run(options: &IdleOptions) -> anyhow::Result<IdleReport> {
    let ticks = procfs::ticks_per_sec();
    let server = ServerProcess::start(&options.server).await?;
    let pinning = Pinning::read(&server)?;
    // Let the runtime and the store finish starting before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = server.status()?;
    let mut fleet = Fleet::new(options.client, server.ws_url());
    let mut stages = Vec::new();
    let mut targets: Vec<usize> = options
        .checkpoints
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < options.connections)
        .collect();
    targets.push(options.connections);
    targets.sort_unstable();
    targets.dedup();
    let cpu_before = server.cpu_time(ticks)?;
    let started = Instant::now();
    let mut reports = Vec::new();
    for target in targets {
        let more = target.saturating_sub(fleet.len());
        let report = fleet.open(more, options.concurrency).await;
        let rss_kib = server.status()?.rss_kib;
        eprintln!(
            "  {} connections open, server RSS {:.1} MiB{}",
            fleet.len(),
            mib(rss_kib),
            report
                .first_error
                .as_deref()
                .map(|e| format!(" ({} failed; first: {e})", report.failed))
                .unwrap_or_default()
        );
        stages.push(Stage {
            connections: fleet.len(),
            rss_kib,
            elapsed_secs: started.elapsed().as_secs_f64(),
        });
        reports.push(report);
    }
    let open_elapsed = started.elapsed();
    let server_cpu_open_secs = (server.cpu_time(ticks)? - cpu_before).as_secs_f64();
    let open = merge(reports, open_elapsed, &fleet);
    tokio::time::sleep(options.settle).await;
    let loaded = server.status()?;
    let metrics = server.metrics().await?;
    let authenticated = metrics
        .value("sotto_signaling_authenticated_connections")
        .context("no sotto_signaling_authenticated_connections in /metrics")?;
    let held = authenticated.max(1.0);
    let report = IdleReport {
        server_command: options.server.command_line(),
        pinning,
        client: options.client,
        requested: options.connections,
        concurrency: options.concurrency,
        rss_per_connection_kib: loaded.rss_kib.saturating_sub(baseline.rss_kib) as f64 / held,
        baseline,
        loaded,
        authenticated,
        open_connections: metrics.value("sotto_signaling_connections").unwrap_or(-1.0),
        accepted: metrics.sum("sotto_signaling_connections_accepted_total"),
        refused: metrics.sum("sotto_signaling_connections_refused_total"),
        dropped: fleet.dropped().await,
        server_cpu_open_secs,
        stages,
        open,
        client_status: procfs::status("self")?,
        shutdown_secs: None,
    };
    fleet.close().await;
    let shutdown = server.stop(Duration::from_secs(20)).await?;
    Ok(IdleReport {
        shutdown_secs: shutdown.map(|d| d.as_secs_f64()),
        ..report
    })
}

/// One report for the whole ramp.
fn merge(reports: Vec<OpenReport>, elapsed: Duration, fleet: &Fleet) -> OpenReport {
    let mut merged = OpenReport {
        opened: 0,
        failed: 0,
        first_error: None,
        elapsed,
        handshake: fleet.handshakes(),
    };
    for r in reports {
        merged.opened += r.opened;
        merged.failed += r.failed;
        if merged.first_error.is_none() {
            merged.first_error = r.first_error;
        }
    }
    merged
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.open;
        writeln!(f, "server:    {}", self.server_command)?;
        writeln!(f, "pinning:   {}", self.pinning)?;
        writeln!(
            f,
            "opened:    {}/{} ({} client, {} handshakes at a time) in {:.2} s ({:.0}/s), {} failed{}",
            o.opened,
            self.requested,
            self.client,
            self.concurrency,
            o.elapsed.as_secs_f64(),
            o.opened as f64 / o.elapsed.as_secs_f64().max(1e-9),
            o.failed,
            o.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )?;
        if let Some(h) = &o.handshake {
            writeln!(f, "handshake: {h}")?;
        }
        writeln!(
            f,
            "held:      {} authenticated, {} open, {} accepted, {} refused, {} dropped (server /metrics and client)",
            self.authenticated, self.open_connections, self.accepted, self.refused, self.dropped
        )?;
        writeln!(
            f,
            "server:    RSS {:.1} MiB with 0 connections; {:.1} MiB with {} (peak {:.1} MiB) = {:.1} KiB per connection; {} threads; {:.2} s CPU while opening",
            mib(self.baseline.rss_kib),
            mib(self.loaded.rss_kib),
            self.authenticated,
            mib(self.loaded.hwm_kib),
            self.rss_per_connection_kib,
            self.loaded.threads,
            self.server_cpu_open_secs
        )?;
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|s| {
                format!(
                    "{} → {:.1} MiB at {:.1} s",
                    s.connections,
                    mib(s.rss_kib),
                    s.elapsed_secs
                )
            })
            .collect();
        writeln!(f, "ramp:      {}", stages.join(", "))?;
        write!(
            f,
            "bench:     RSS {:.1} MiB, {} threads; server stopped in {}",
            mib(self.client_status.rss_kib),
            self.client_status.threads,
            self.shutdown_secs
                .map_or_else(|| "(killed)".to_owned(), |s| format!("{s:.2} s"))
        )
    }
}
