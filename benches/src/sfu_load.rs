//! The SFU load bench: the real `sotto-sfu` binary as a child process (pinned with
//! `taskset`), an in-process signaling server, and many participants in this process,
//! each with its own UDP socket, signaling connection and real DTLS-SRTP leg
//! ([`sotto_sfu::client::Client`]). Publishers send Opus-sized audio packets, 50 a second,
//! through rtc. Subscribers hand every datagram to rtc until their forwarded tracks have
//! opened; after that they only count SRTP packets by the (unencrypted) RTP header, since
//! decrypting 100,000 packets a second would make this process, not the SFU, the
//! bottleneck. STUN, DTLS and RTCP still go to rtc, so the legs stay alive.
//!
//! Measured over the window, from the SFU's `/metrics` and `/proc`: forwarded packets per
//! second, the SFU's CPU time (so packets per CPU-second), the forward-latency
//! histogram's p50 and p99, and RSS per subscriber; from the subscribers: loss.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use sotto_sfu::client::{Client, ClientEvent, Outgoing, Publish};
use sotto_signaling::client::{
    CallSignal, ClientConfig, Event, KeyAuthenticator, RoomInvite, SignalingClient, SignalingSender,
};
use sotto_signaling::protocol::{Answer, IdentityKey, Offer};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};

use crate::signaling::procfs;
use sotto_bench::ports::{Proto, unused_port};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The `sotto-sfu` binary.
    pub sfu_bin: PathBuf,
    /// `taskset -c` CPU list for the SFU.
    pub sfu_cpu: Option<String>,
    /// The SFU's send workers (its default when `None`).
    pub sfu_workers: Option<u16>,
    /// Run the SFU in a network namespace of its own, reached over a veth pair (root and
    /// iproute2), instead of on loopback.
    pub veth: bool,
    /// Rooms.
    pub rooms: usize,
    /// Audio publishers per room.
    pub publishers: usize,
    /// Subscribers per room (they publish nothing).
    pub subscribers: usize,
    /// How long to measure.
    pub duration: Duration,
}

/// What was measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub sfu_cpu: Option<String>,
    pub sfu_workers: Option<u16>,
    pub veth: bool,
    pub rooms: usize,
    pub publishers_per_room: usize,
    pub subscribers_per_room: usize,
    pub window_s: f64,
    pub forwarded_per_s: f64,
    pub sfu_cpu_cores: f64,
    /// Cores used by the send workers' threads (`sfu-send-N`), together.
    pub send_threads_cores: f64,
    /// Cores used by every other thread (the core's loop, signaling, HTTP).
    pub other_threads_cores: f64,
    /// Cores used by the busiest single thread: what one more core cannot shorten.
    pub busiest_thread_cores: f64,
    pub forwarded_per_cpu_s: f64,
    pub loss_percent: f64,
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    pub sfu_rss_idle_kib: u64,
    pub sfu_rss_loaded_kib: u64,
    pub rss_per_subscriber_kib: f64,
    pub setup_s: f64,
}

/// Subscribers' counts, summed.
#[derive(Default)]
struct Totals {
    received: AtomicU64,
    expected: AtomicU64,
    ready: AtomicUsize,
}

/// Phases every participant watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Measure,
    Stop,
}

/// Runs the bench.
pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, rand::random::<[u8; 16]>().map(|b| b % 26 + b'a'))?;
    let per_room = options.publishers + options.subscribers + 1;
    // Over veth: the SFU on the namespace's end, signaling and every participant on ours.
    let netns = if options.veth {
        Some(
            sotto_bench::netns::Netns::create("sotto-load", "sload", 78)
                .map_err(anyhow::Error::msg)?,
        )
    } else {
        None
    };
    let (local_ip, sfu_ip): (IpAddr, IpAddr) = match &netns {
        Some(n) => (n.host_addr.parse()?, n.inner_addr.parse()?),
        None => (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()),
    };
    let mut config = sotto_signaling::server::Config::new(
        SocketAddr::new(local_ip, 0),
        dir.path().join("signaling"),
    );
    config.sfu_secret_file = Some(secret.clone());
    config.max_room_participants = u32::try_from(per_room)?;
    config.max_connections = options.rooms * per_room + 64;
    config.rate_per_sec = 1000;
    config.rate_burst = 1000;
    let server = sotto_signaling::server::start(config).await?;
    let url = server.ws_url();

    let udp = unused_port(Proto::Udp)?;
    let http = unused_port(Proto::Tcp)?;
    // [ip netns exec NAME] [taskset -c CPUS] sotto-sfu ...: each execs the next, so the
    // child's pid is the SFU's.
    let mut program: Vec<std::ffi::OsString> = Vec::new();
    if let Some(n) = &netns {
        program.extend(["ip", "netns", "exec", n.name.as_str()].map(Into::into));
    }
    if let Some(cpu) = &options.sfu_cpu {
        program.extend(["taskset", "-c", cpu.as_str()].map(Into::into));
    }
    program.push(options.sfu_bin.clone().into_os_string());
    let mut command = tokio::process::Command::new(&program[0]);
    command.args(&program[1..]);
    let sfu_http = SocketAddr::new(sfu_ip, http);
    let mut sfu = command
        .arg("--listen-udp")
        .arg(SocketAddr::new(sfu_ip, udp).to_string())
        .arg("--http")
        .arg(sfu_http.to_string())
        .arg("--signaling")
        .arg(&url)
        .arg("--secret-file")
        .arg(&secret)
        .args(
            options
                .sfu_workers
                .map(|w| ["--workers".to_owned(), w.to_string()])
                .into_iter()
                .flatten(),
        )
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", options.sfu_bin.display()))?;
    let pid = sfu.id().context("the SFU exited at once")?.to_string();

    // Rooms, once the SFU has registered.
    let creator = connect(&url).await?;
    let mut invites = Vec::new();
    let setup_started = Instant::now();
    for _ in 0..options.rooms {
        invites.push(create_room(&creator, per_room).await?);
    }
    let rss_idle = procfs::status(&pid)?.rss_kib;

    let totals = Arc::new(Totals::default());
    let (phase_tx, phase) = watch::channel(Phase::Setup);
    let handshakes = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for invite in &invites {
        for i in 0..options.publishers + options.subscribers {
            let publisher = i < options.publishers;
            let participant = Participant {
                url: url.clone(),
                invite: invite.clone(),
                publisher,
                publishers: options.publishers,
                totals: totals.clone(),
                phase: phase.clone(),
                handshakes: handshakes.clone(),
                local_ip,
            };
            tasks.push(tokio::spawn(participant.run()));
        }
    }

    // Every subscriber hears every publisher of its room: then warm up and measure.
    let subscribers = options.rooms * options.subscribers;
    let deadline = Instant::now() + Duration::from_secs(60 + subscribers as u64 / 20);
    while totals.ready.load(Ordering::Relaxed) < subscribers {
        if Instant::now() > deadline {
            let mut failures = Vec::new();
            for task in tasks.iter_mut().filter(|t| t.is_finished()) {
                match task.await {
                    Ok(Err(err)) => failures.push(format!("{err:#}")),
                    Err(err) => failures.push(err.to_string()),
                    Ok(Ok(())) => {}
                }
            }
            bail!(
                "only {} of {subscribers} subscribers were receiving in time; {} participant(s) failed{}",
                totals.ready.load(Ordering::Relaxed),
                failures.len(),
                failures
                    .first()
                    .map(|f| format!(", the first: {f}"))
                    .unwrap_or_default()
            );
        }
        if let Some(status) = sfu.try_wait()? {
            bail!("the SFU exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ticks = procfs::ticks_per_sec();
    let before = metrics(sfu_http).await?;
    let cpu_before = procfs::cpu_time(&pid, ticks)?;
    let threads_before = procfs::thread_cpu_times(&pid, ticks)?;
    let started = Instant::now();
    phase_tx.send_replace(Phase::Measure);
    tokio::time::sleep(options.duration).await;
    let rss_loaded = procfs::status(&pid)?.rss_kib;
    let after = metrics(sfu_http).await?;
    let cpu_after = procfs::cpu_time(&pid, ticks)?;
    let threads_after = procfs::thread_cpu_times(&pid, ticks)?;
    let window = started.elapsed().as_secs_f64();
    phase_tx.send_replace(Phase::Stop);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let _ = sfu.kill().await;

    let forwarded =
        after.counter("sotto_sfu_forwarded_total") - before.counter("sotto_sfu_forwarded_total");
    let cpu = (cpu_after - cpu_before).as_secs_f64();
    let threads = thread_split(&threads_before, &threads_after, window);
    let latency = after.histogram_delta(&before, "sotto_sfu_forward_latency_seconds");
    let received = totals.received.load(Ordering::Relaxed);
    let expected = totals.expected.load(Ordering::Relaxed).max(1);
    Ok(LoadReport {
        sfu_cpu: options.sfu_cpu.clone(),
        sfu_workers: options.sfu_workers,
        veth: options.veth,
        rooms: options.rooms,
        publishers_per_room: options.publishers,
        subscribers_per_room: options.subscribers,
        window_s: window,
        forwarded_per_s: forwarded / window,
        sfu_cpu_cores: cpu / window,
        send_threads_cores: threads.send,
        other_threads_cores: threads.other,
        busiest_thread_cores: threads.busiest,
        forwarded_per_cpu_s: if cpu > 0.0 { forwarded / cpu } else { 0.0 },
        loss_percent: 100.0 * (1.0 - received as f64 / expected as f64).max(0.0),
        latency_p50_us: quantile(&latency, 0.5).map(|s| s * 1e6),
        latency_p99_us: quantile(&latency, 0.99).map(|s| s * 1e6),
        sfu_rss_idle_kib: rss_idle,
        sfu_rss_loaded_kib: rss_loaded,
        rss_per_subscriber_kib: rss_loaded.saturating_sub(rss_idle) as f64
            / (options.rooms * (options.publishers + options.subscribers)).max(1) as f64,
        setup_s,
    })
}

/// The SFU's CPU over the window by kind of thread, in cores.
struct ThreadSplit {
    send: f64,
    other: f64,
    busiest: f64,
}

type Threads = std::collections::BTreeMap<String, (String, Duration)>;

fn thread_split(before: &Threads, after: &Threads, window: f64) -> ThreadSplit {
    let mut split = ThreadSplit {
        send: 0.0,
        other: 0.0,
        busiest: 0.0,
    };
    for (tid, (name, used)) in after {
        let start = before.get(tid).map_or(Duration::ZERO, |(_, t)| *t);
        let cores = used.saturating_sub(start).as_secs_f64() / window.max(1e-9);
        if name.starts_with("sfu-send-") {
            split.send += cores;
        } else {
            split.other += cores;
        }
        split.busiest = split.busiest.max(cores);
    }
    split
}

async fn connect(url: &str) -> anyhow::Result<SignalingClient> {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    Ok(SignalingClient::connect(
        ClientConfig::new(url),
        Arc::new(KeyAuthenticator::new(key, None)),
    )
    .await?)
}

/// A group room, retrying while the SFU is still registering.
async fn create_room(creator: &SignalingClient, size: usize) -> anyhow::Result<RoomInvite> {
    for _ in 0..150 {
        match creator.create_group_room(Some(u32::try_from(size)?)).await {
            Ok(invite) => return Ok(invite),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    bail!("no SFU registered with signaling")
}

struct Participant {
    url: String,
    invite: RoomInvite,
    publisher: bool,
    publishers: usize,
    totals: Arc<Totals>,
    phase: watch::Receiver<Phase>,
    handshakes: Arc<Semaphore>,
    /// The address its socket binds.
    local_ip: IpAddr,
}

/// Per forwarded SSRC: the extended sequence numbers seen while measuring.
#[derive(Default)]
struct Seen {
    first: Option<u64>,
    highest: u64,
    count: u64,
    last: u16,
}

impl Seen {
    fn add(&mut self, seq: u16) {
        let ext = match self.first {
            None => {
                self.first = Some(u64::from(seq) + (1 << 16));
                self.highest = u64::from(seq) + (1 << 16);
                self.last = seq;
                self.count = 1;
                return;
            }
            Some(_) => {
                let delta = i64::from(seq.wrapping_sub(self.last) as i16);
                (self.highest as i64 + delta) as u64
            }
        };
        if ext > self.highest {
            self.highest = ext;
            self.last = seq;
        }
        self.count += 1;
    }

    fn expected(&self) -> u64 {
        self.first.map_or(0, |first| self.highest - first + 1)
    }
}

impl Participant {
    async fn run(self) -> anyhow::Result<()> {
        let permit = self.handshakes.clone().acquire_owned().await?;
        let mut signaling = connect(&self.url).await?;
        let (_, sfu) = signaling
            .join_group_room(&self.invite.room_id, &self.invite.invite_token)
            .await?;
        let sfu = sfu.context("the room has no SFU")?;
        let socket = UdpSocket::bind(SocketAddr::new(self.local_ip, 0)).await?;
        let addr = socket.local_addr()?;
        let ssrc: u32 = rand::random();
        let mut client = Client::new("load", addr, &[Publish::audio(ssrc)], Instant::now())?;
        let room = self.invite.room_id.0.clone();
        let sender = signaling.sender();
        let offer = client.offer(Instant::now())?;
        sender
            .send_call_signal(
                sfu,
                CallSignal::Offer(Offer {
                    call_id: room.clone(),
                    sdp: offer,
                    ice_restart: false,
                    e2ee: None,
                }),
            )
            .await?;
        drop(permit);

        let mut phase = self.phase.clone();
        let mut buf = vec![0u8; 2048];
        let mut connected = false;
        let mut tracks = 0usize;
        let mut counting = false;
        let mut seen: HashMap<u32, Seen> = HashMap::new();
        let mut seq = 0u16;
        let mut next_send = tokio::time::Instant::now();
        loop {
            flush(&mut client, &socket, &mut connected, &mut tracks).await;
            if !self.publisher && !counting && tracks >= self.publishers {
                counting = true;
                self.totals.ready.fetch_add(1, Ordering::Relaxed);
            }
            let measuring = *phase.borrow() == Phase::Measure;
            let timeout = client
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(100));
            let send_at = if self.publisher && connected {
                next_send
            } else {
                tokio::time::Instant::now() + Duration::from_secs(3600)
            };
            tokio::select! {
                received = socket.recv_from(&mut buf) => {
                    let (n, from) = received?;
                    let datagram = &buf[..n];
                    if counting && is_rtp(datagram) {
                        if measuring {
                            let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
                            seen.entry(ssrc).or_default().add(u16::from_be_bytes([datagram[2], datagram[3]]));
                        }
                    } else {
                        let _ = client.handle_datagram(Instant::now(), from, datagram);
                    }
                }
                _ = tokio::time::sleep_until(timeout) => {
                    let _ = client.handle_timeout(Instant::now());
                }
                _ = tokio::time::sleep_until(send_at) => {
                    next_send += Duration::from_millis(20);
                    let outgoing = Outgoing {
                        seq,
                        timestamp: u32::from(seq).wrapping_mul(960),
                        marker: false,
                        frame: None,
                        payload: Bytes::from_static(&[0xFC; 80]),
                    };
                    seq = seq.wrapping_add(1);
                    let _ = client.send_rtp(ssrc, outgoing, Instant::now());
                }
                event = signaling.next_event() => match event {
                    Some(Event::Call { from, signal }) => on_signal(&mut client, &sender, from, signal).await,
                    Some(_) => {}
                    None => bail!("signaling closed"),
                },
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Stop {
                        break;
                    }
                }
            }
        }
        let received: u64 = seen.values().map(|s| s.count).sum();
        let expected: u64 = seen.values().map(Seen::expected).sum();
        self.totals.received.fetch_add(received, Ordering::Relaxed);
        self.totals.expected.fetch_add(expected, Ordering::Relaxed);
        Ok(())
    }
}

/// An SRTP packet (not SRTCP: RFC 5761 payload types 200..=207).
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12
        && (128..=191).contains(&datagram[0])
        && !(200..=207).contains(&datagram[1])
}

async fn flush(client: &mut Client, socket: &UdpSocket, connected: &mut bool, tracks: &mut usize) {
    while let Some(event) = client.poll_event() {
        match event {
            ClientEvent::Connected => *connected = true,
            ClientEvent::TrackOpened { .. } => *tracks += 1,
            _ => {}
        }
    }
    while let Some(transmit) = client.poll_transmit() {
        let _ = socket.send_to(&transmit.payload, transmit.to).await;
    }
}

async fn on_signal(
    client: &mut Client,
    sender: &SignalingSender,
    from: IdentityKey,
    signal: CallSignal,
) {
    match signal {
        CallSignal::Answer(answer) => {
            let _ = client.apply_answer(&answer.sdp, Instant::now());
        }
        CallSignal::Offer(offer) => {
            if let Ok(sdp) = client.accept_offer(&offer.sdp, Instant::now()) {
                let _ = sender
                    .send_call_signal(
                        from,
                        CallSignal::Answer(Answer {
                            call_id: offer.call_id,
                            sdp,
                            e2ee: None,
                        }),
                    )
                    .await;
            }
        }
        _ => {}
    }
}

/// A `/metrics` scrape.
struct Metrics(String);

async fn metrics(addr: SocketAddr) -> anyhow::Result<Metrics> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .context("no body in the /metrics response")?;
    Ok(Metrics(body.to_owned()))
}

impl Metrics {
    fn counter(&self, name: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The histogram's cumulative bucket counts: (upper bound, count).
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        self.0
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (bound, count) = rest.split_once("\"}")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect()
    }

    fn histogram_delta(&self, before: &Metrics, name: &str) -> Vec<(f64, f64)> {
        let old = before.buckets(name);
        self.buckets(name)
            .into_iter()
            .map(|(bound, count)| {
                let was = old
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0.0, |(_, c)| *c);
                (bound, count - was)
            })
            .collect()
    }
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside its bucket.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let want = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= want {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let inside = (want - lower.1) / (count - lower.1).max(1e-9);
            return Some(lower.0 + inside * (bound - lower.0));
        }
        lower = (bound, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let buckets = [
            (1.0, 50.0),
            (2.0, 90.0),
            (4.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(&buckets, 0.5), Some(1.0));
        assert_eq!(quantile(&buckets, 0.7), Some(1.5));
        assert_eq!(quantile(&buckets, 0.95), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn sequence_numbers_extend_over_wraps_and_reordering() {
        let mut seen = Seen::default();
        for seq in [65_530u16, 65_531, 65_533, 65_532, 0, 1, 3] {
            seen.add(seq);
        }
        assert_eq!(seen.count, 7);
        assert_eq!(
            seen.expected(),
            10,
            "65530..=3 is ten numbers; 65534, 65535, 2 lost"
        );
    }
}
