//! The relay bench: client A sends `candidate` messages to client B through the server at
//! a steady rate; B measures how long each took to arrive.
//!
//! Both clients live in this process and share one clock: A writes the send time
//! (nanoseconds since a shared `Instant`) and a sequence number into the candidate
//! string, B subtracts it from the arrival time. A sends in small bursts on a short tick
//! (5 messages every 1 ms for 5,000/s), keeping the total on `rate × elapsed`. Messages
//! sent during the warm-up are counted but left out of the latency figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use sotto_engine::Identity;
use sotto_signaling::protocol::{
    Candidate, ClientFrame, ClientMessage, IdentityKey, Outgoing, ServerFrame, ServerMessage,
};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use super::client::{ClientKind, Fleet, OpenReport, Ws, raw_connect};
use super::procfs::{self, ProcStatus};
use super::server::{ServerProcess, ServerSpec};
use super::stats::Summary;
use super::{Pinning, mib};

/// What to run.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The server and its flags.
    pub server: ServerSpec,
    /// Messages per second from A to B.
    pub rate: u32,
    /// How long to measure (after the warm-up).
    pub duration: Duration,
    /// How long to send before measuring.
    pub warmup: Duration,
    /// A's send tick; each tick sends what is due.
    pub tick: Duration,
    /// Idle authenticated connections held meanwhile.
    pub idle_connections: usize,
    /// Which client holds them.
    pub idle_client: ClientKind,
    /// Handshakes in flight at once while opening them.
    pub concurrency: usize,
    /// How long to wait for the last messages after A stops.
    pub drain: Duration,
}

/// The idle connections held during the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Background {
    /// Which client.
    pub client: ClientKind,
    /// How opening went.
    pub open: OpenReport,
    /// Server memory with them open, before the relay starts.
    pub server: ProcStatus,
}

/// The result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayReport {
    /// The server's command line.
    pub server_command: String,
    /// Where each side ran.
    pub pinning: Pinning,
    /// Messages per second asked for.
    pub target_rate: u32,
    /// A's send tick, in microseconds.
    pub tick_us: u64,
    /// Warm-up, in seconds.
    pub warmup_secs: f64,
    /// Measured window (A's sending after the warm-up), in seconds.
    pub window_secs: f64,
    /// Idle connections held meanwhile.
    pub background: Option<Background>,
    /// Messages A sent (warm-up included).
    pub sent: u64,
    /// Messages A sent in the measured window.
    pub sent_measured: u64,
    /// `sent_measured / window_secs`.
    pub achieved_rate: f64,
    /// `relayed` acknowledgements A received.
    pub relayed: u64,
    /// Error replies A received, by code.
    pub errors: BTreeMap<String, u64>,
    /// Candidates B received (warm-up included).
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
    /// Send-to-arrival latency of the messages sent in the measured window.
    pub latency: Option<Summary>,
    /// Longest gap between two of A's ticks, in microseconds (a stalled sender shows
    /// here, not as server latency).
    pub max_tick_gap_us: f64,
    /// Server CPU use over the measured window, percent of one core.
    pub server_cpu_pct: f64,
    /// This process's CPU use over the measured window, percent of one core.
    pub bench_cpu_pct: f64,
    /// Server memory at the end.
    pub server_end: ProcStatus,
    /// `sotto_signaling_dropped_events_total` at the end.
    pub server_dropped_events: f64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    relayed: AtomicU64,
    errors: AtomicU64,
}

struct SendStats {
    sent: u64,
    sent_measured: u64,
    window: Duration,
    max_gap: Duration,
}

/// Run it.
pub async fn run(options: &RelayOptions) -> anyhow::Result<RelayReport> {
    let ticks = procfs::ticks_per_sec();
    let server = ServerProcess::start(&options.server).await?;
    let pinning = Pinning::read(&server)?;
    let url = server.ws_url();
    let mut fleet = Fleet::new(options.idle_client, url.clone());
    let background = if options.idle_connections > 0 {
        let open = fleet
            .open(options.idle_connections, options.concurrency)
            .await;
        eprintln!(
            "  {} idle connections open ({} failed), settling",
            open.opened, open.failed
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        Some(Background {
            client: options.idle_client,
            open,
            server: server.status()?,
        })
    } else {
        None
    };

    let a_identity = Identity::generate(None).context("generating A")?;
    let b_identity = Identity::generate(None).context("generating B")?;
    let a = raw_connect(&url, &a_identity, 128 * 1024)
        .await
        .context("connecting A")?;
    let b = raw_connect(&url, &b_identity, 128 * 1024)
        .await
        .context("connecting B")?;
    let (mut a_tx, a_rx) = a.split();
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let clock = Instant::now();
    let warmup_ns = nanos(options.warmup);
    let receiver = tokio::spawn(receive(
        b,
        clock,
        warmup_ns,
        counters.clone(),
        stop_rx.clone(),
    ));
    let acks = tokio::spawn(acknowledgements(a_rx, counters.clone(), stop_rx));
    let cpu = tokio::spawn(cpu_over_window(
        server.pid().to_string(),
        ticks,
        clock,
        options.warmup,
        options.warmup + options.duration,
    ));

    let sending = send(&mut a_tx, b_identity.public(), options, clock).await;
    let drain_until = Instant::now() + options.drain;
    let sent = sending.as_ref().map_or(0, |s| s.sent);
    while Instant::now() < drain_until {
        // Every message answered (relayed or error), and every relayed one arrived.
        let errors = counters.errors.load(Ordering::Relaxed);
        let answered = counters.relayed.load(Ordering::Relaxed) + errors;
        let arrived = counters.received.load(Ordering::Relaxed) + errors;
        if answered >= sent && arrived >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let sending = sending?;
    let mut latencies = receiver.await.context("B's task")??;
    let errors = acks.await.context("A's reader task")?;
    let (server_cpu, bench_cpu) = cpu.await.context("the CPU sampler")??;
    let window = sending.window.as_secs_f64().max(1e-9);
    let received = counters.received.load(Ordering::Relaxed);
    let metrics = server.metrics().await?;
    let report = RelayReport {
        server_command: options.server.command_line(),
        pinning,
        target_rate: options.rate,
        tick_us: u64::try_from(options.tick.as_micros()).unwrap_or(u64::MAX),
        warmup_secs: options.warmup.as_secs_f64(),
        window_secs: window,
        background,
        sent: sending.sent,
        sent_measured: sending.sent_measured,
        achieved_rate: sending.sent_measured as f64 / window,
        relayed: counters.relayed.load(Ordering::Relaxed),
        errors,
        received,
        lost: sending.sent.saturating_sub(received),
        latency: Summary::of_nanos(&mut latencies),
        max_tick_gap_us: sending.max_gap.as_secs_f64() * 1e6,
        server_cpu_pct: server_cpu,
        bench_cpu_pct: bench_cpu,
        server_end: server.status()?,
        server_dropped_events: metrics.sum("sotto_signaling_dropped_events_total"),
    };
    let _ = a_tx.close().await;
    fleet.close().await;
    server.stop(Duration::from_secs(20)).await?;
    Ok(report)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A: send what is due on every tick until warm-up + duration have passed.
async fn send(
    tx: &mut SplitSink<Ws, Message>,
    to: IdentityKey,
    options: &RelayOptions,
    clock: Instant,
) -> anyhow::Result<SendStats> {
    let rate = f64::from(options.rate);
    let end = options.warmup + options.duration;
    let per_tick = (rate * options.tick.as_secs_f64()).ceil() as u64;
    // After a stall, catch up at most this fast, so the backlog does not arrive as one
    // burst that measures the bench rather than the server.
    let cap = per_tick.max(1) * 10;
    let mut interval = tokio::time::interval(options.tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut at_warmup: Option<(u64, Duration)> = None;
    let mut last_tick = Duration::ZERO;
    let mut max_gap = Duration::ZERO;
    loop {
        interval.tick().await;
        let now = clock.elapsed();
        max_gap = max_gap.max(now.saturating_sub(last_tick));
        last_tick = now;
        if now >= end {
            break;
        }
        if at_warmup.is_none() && now >= options.warmup {
            at_warmup = Some((sent, now));
        }
        let due = (rate * now.as_secs_f64()) as u64;
        let n = due.saturating_sub(sent).min(cap);
        for _ in 0..n {
            sent += 1;
            let frame = candidate_frame(sent, nanos(clock.elapsed()), to)?;
            tx.feed(Message::Text(frame.into()))
                .await
                .context("A: sending")?;
        }
        if n > 0 {
            tx.flush().await.context("A: flushing")?;
        }
    }
    let finished = clock.elapsed();
    let (sent_before, started) = at_warmup.unwrap_or((0, finished));
    Ok(SendStats {
        sent,
        sent_measured: sent - sent_before,
        window: finished.saturating_sub(started),
        max_gap,
    })
}

/// A `candidate` frame for `to` whose candidate string carries `seq` and `sent_ns`.
fn candidate_frame(seq: u64, sent_ns: u64, to: IdentityKey) -> anyhow::Result<String> {
    let frame = ClientFrame {
        id: Some(seq),
        message: ClientMessage::Candidate(Outgoing {
            to,
            body: Candidate {
                call_id: "sotto-bench".to_owned(),
                candidate: format!(
                    "candidate:{seq} 1 udp 2130706431 127.0.0.1 9 typ host generation 0 sotto-seq {seq} sotto-sent-ns {sent_ns}"
                ),
                sdp_mid: Some("0".to_owned()),
                sdp_mline_index: Some(0),
            },
        }),
    };
    serde_json::to_string(&frame).context("encoding a candidate")
}

/// `(seq, sent_ns)` from a candidate string made by [`candidate_frame`].
fn parse_stamp(candidate: &str) -> Option<(u64, u64)> {
    let mut words = candidate.split_whitespace();
    let mut seq = None;
    let mut sent = None;
    while let Some(word) = words.next() {
        match word {
            "sotto-seq" => seq = words.next()?.parse().ok(),
            "sotto-sent-ns" => sent = words.next()?.parse().ok(),
            _ => {}
        }
    }
    Some((seq?, sent?))
}

/// B: take the arrival time of every candidate as soon as its frame is read.
async fn receive(
    mut ws: Ws,
    clock: Instant,
    warmup_ns: u64,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::with_capacity(1 << 16);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let arrived = nanos(clock.elapsed());
                    let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) else {
                        bail!("B: unreadable frame from the server");
                    };
                    if let ServerMessage::Candidate(m) = frame.message
                        && let Some((_, sent)) = parse_stamp(&m.body.candidate)
                    {
                        counters.received.fetch_add(1, Ordering::Relaxed);
                        if sent >= warmup_ns {
                            latencies.push(arrived.saturating_sub(sent));
                        }
                    }
                }
                Some(Ok(Message::Ping(_))) => ws.flush().await.context("B: answering a ping")?,
                Some(Ok(Message::Close(_))) | None => bail!("B: the server closed the connection"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("B: reading"),
            },
        }
    }
    Ok(latencies)
}

/// A's reader: count `relayed` and errors by code.
async fn acknowledgements(
    mut rx: SplitStream<Ws>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    match serde_json::from_str::<ServerFrame>(text.as_str()).map(|f| f.message) {
                        Ok(ServerMessage::Relayed {}) => {
                            counters.relayed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(ServerMessage::Error { code, .. }) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            *errors.entry(code.as_str().to_owned()).or_insert(0) += 1;
                        }
                        Ok(_) => {}
                        Err(_) => *errors.entry("unreadable".to_owned()).or_insert(0) += 1,
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    *errors.entry("connection_closed".to_owned()).or_insert(0) += 1;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    errors
}

/// CPU use of the server and of this process between `from` and `to` (after `clock`), in
/// percent of one core.
async fn cpu_over_window(
    server_pid: String,
    ticks: u64,
    clock: Instant,
    from: Duration,
    to: Duration,
) -> anyhow::Result<(f64, f64)> {
    let sample = || -> anyhow::Result<(Duration, Duration, Instant)> {
        Ok((
            procfs::cpu_time(&server_pid, ticks)?,
            procfs::cpu_time("self", ticks)?,
            Instant::now(),
        ))
    };
    tokio::time::sleep_until((clock + from).into()).await;
    let (s0, b0, t0) = sample()?;
    tokio::time::sleep_until((clock + to).into()).await;
    let (s1, b1, t1) = sample()?;
    let wall = (t1 - t0).as_secs_f64().max(1e-9);
    Ok((
        100.0 * (s1 - s0).as_secs_f64() / wall,
        100.0 * (b1 - b0).as_secs_f64() / wall,
    ))
}

impl std::fmt::Display for RelayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "server:    {}", self.server_command)?;
        writeln!(f, "pinning:   {}", self.pinning)?;
        if let Some(b) = &self.background {
            writeln!(
                f,
                "idle:      {} idle connections held ({} client, {} failed), server RSS {:.1} MiB before the relay",
                b.open.opened,
                b.client,
                b.open.failed,
                mib(b.server.rss_kib)
            )?;
        } else {
            writeln!(f, "idle:      none (only A and B connected)")?;
        }
        writeln!(
            f,
            "rate:      target {}/s in bursts every {} µs; achieved {:.0}/s over {:.2} s after {:.1} s warm-up; longest tick gap {:.1} ms",
            self.target_rate,
            self.tick_us,
            self.achieved_rate,
            self.window_secs,
            self.warmup_secs,
            self.max_tick_gap_us / 1000.0
        )?;
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        writeln!(
            f,
            "messages:  sent {}, relayed {}, received {}, lost {}, errors [{}], server dropped events {}",
            self.sent,
            self.relayed,
            self.received,
            self.lost,
            errors.join(", "),
            self.server_dropped_events
        )?;
        match &self.latency {
            Some(l) => writeln!(f, "latency:   {l}")?,
            None => writeln!(f, "latency:   no samples")?,
        }
        write!(
            f,
            "cpu:       server {:.1}% of its core, bench {:.1}% of its core; server RSS at the end {:.1} MiB",
            self.server_cpu_pct,
            self.bench_cpu_pct,
            mib(self.server_end.rss_kib)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_the_wire_format() {
        let to = IdentityKey([7; 32]);
        let text = candidate_frame(42, 123_456_789, to).unwrap();
        let frame: ClientFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(frame.id, Some(42));
        let ClientMessage::Candidate(m) = frame.message else {
            panic!("not a candidate: {text}");
        };
        assert_eq!(m.to, to);
        assert_eq!(parse_stamp(&m.body.candidate), Some((42, 123_456_789)));
        assert_eq!(
            parse_stamp("candidate:1 1 udp 1 10.0.0.2 5000 typ host"),
            None
        );
        assert_eq!(parse_stamp("x sotto-seq 1 sotto-sent-ns"), None);
    }
}
