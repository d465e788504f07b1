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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use serde_json::json;
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
    /// Janus's event loops (0: a thread per handle).
    pub janus_loops: u16,
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
    pub target: Target,
    pub sfu_cpu: Option<String>,
    pub sfu_workers: Option<u16>,
    pub janus_loops: u16,
    pub veth: bool,
    pub rooms: usize,
    pub publishers_per_room: usize,
    pub subscribers_per_room: usize,
    pub window_s: f64,
    /// From the SFU's counter (Janus has none: there, what its subscribers received).
    pub forwarded_per_s: f64,
    /// What the subscribers received.
    pub delivered_per_s: f64,
    pub sfu_cpu_cores: f64,
    /// Cores used by the send workers' threads (`sfu-send-N`), together.
    pub send_threads_cores: f64,
    /// Cores used by every other thread (the core's loop, signaling, HTTP).
    pub other_threads_cores: f64,
    /// Cores used by the busiest single thread: what one more core cannot shorten.
    pub busiest_thread_cores: f64,
    pub forwarded_per_cpu_s: f64,
    pub delivered_per_cpu_s: f64,
    pub loss_percent: f64,
    /// The SFU's own forward-latency histogram (ours only).
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    /// Each packet's delay from publisher to subscriber above its stream's fastest packet
    /// in the window, as the subscribers see it (measured alike for both SFUs; it includes
    /// the generator's own scheduling).
    pub delay_p50_us: Option<f64>,
    pub delay_p99_us: Option<f64>,
    pub sfu_rss_idle_kib: u64,
    pub sfu_rss_loaded_kib: u64,
    pub rss_per_subscriber_kib: f64,
    pub setup_s: f64,
    /// Subscribers receiving when the window began (fewer than all only when setup
    /// timed out; the figures above then count only these).
    pub subscribers_ready: usize,
    /// Why not all were, then.
    pub setup_failure: Option<String>,
}

/// Subscribers' counts, summed.
#[derive(Default)]
struct Totals {
    received: AtomicU64,
    expected: AtomicU64,
    ready: AtomicUsize,
    /// Every measured packet's delay above its stream's fastest, µs.
    delays: Mutex<Vec<u32>>,
}

/// Phases every participant watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Measure,
    Stop,
}

/// Which SFU a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The `sotto-sfu` binary, with our signaling.
    Sotto,
    /// Janus 1.1's VideoRoom plugin over its HTTP API ([`crate::janus`]).
    Janus,
}

/// The rooms' ids at Janus.
fn janus_room(room: usize) -> u64 {
    1000 + room as u64
}

/// A publisher's feed id at Janus.
fn janus_feed(publisher: usize) -> u64 {
    1 + publisher as u64
}

/// Runs the bench against one SFU.
pub async fn run(options: &LoadOptions, target: Target) -> anyhow::Result<LoadReport> {
    let dir = tempfile::tempdir()?;
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
    let (local_ip, sfu_ip): (IpAddr, IpAddr) = match (&netns, target) {
        (Some(n), _) => (n.host_addr.parse()?, n.inner_addr.parse()?),
        (None, Target::Sotto) => (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()),
        // Janus (libnice) gathers no candidate on `lo`; this machine's own address is
        // loopback all the same (the kernel routes it through `lo`).
        (None, Target::Janus) => {
            let own = crate::janus::own_address()?;
            (own, own)
        }
    };
    let http = unused_port(Proto::Tcp)?;
    let sfu_http = SocketAddr::new(sfu_ip, http);

    // [ip netns exec NAME] [taskset -c CPUS] SFU ...: each execs the next, so the child's
    // pid is the SFU's.
    let mut program: Vec<std::ffi::OsString> = Vec::new();
    if let Some(n) = &netns {
        program.extend(["ip", "netns", "exec", n.name.as_str()].map(Into::into));
    }
    if let Some(cpu) = &options.sfu_cpu {
        program.extend(["taskset", "-c", cpu.as_str()].map(Into::into));
    }
    let mut signaling_server = None;
    let mut command;
    match target {
        Target::Sotto => {
            let secret = dir.path().join("secret");
            std::fs::write(&secret, rand::random::<[u8; 16]>().map(|b| b % 26 + b'a'))?;
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
            program.push(options.sfu_bin.clone().into_os_string());
            command = tokio::process::Command::new(&program[0]);
            command
                .args(&program[1..])
                .arg("--listen-udp")
                .arg(SocketAddr::new(sfu_ip, unused_port(Proto::Udp)?).to_string())
                .arg("--http")
                .arg(sfu_http.to_string())
                .arg("--signaling")
                .arg(server.ws_url())
                .arg("--secret-file")
                .arg(&secret)
                .args(
                    options
                        .sfu_workers
                        .map(|w| ["--workers".to_owned(), w.to_string()])
                        .into_iter()
                        .flatten(),
                )
                .env("RUST_LOG", "warn");
            signaling_server = Some(server);
        }
        Target::Janus => {
            let folder = dir.path().to_str().context("a non-UTF-8 temporary path")?;
            for (name, text) in crate::janus::config_files(
                folder,
                sfu_ip,
                http,
                (20_000, 60_000),
                options.janus_loops,
            ) {
                std::fs::write(dir.path().join(name), text)?;
            }
            program.push("janus".into());
            command = tokio::process::Command::new(&program[0]);
            command
                .args(&program[1..])
                .arg("--configs-folder")
                .arg(folder)
                .arg("--config")
                .arg(dir.path().join("janus.jcfg"))
                .arg("--disable-stdout")
                .arg("--log-file")
                .arg(dir.path().join("janus.log"))
                .stdout(std::process::Stdio::null());
        }
    }
    let mut sfu = command
        .kill_on_drop(true)
        .spawn()
        .with_context(|| match target {
            Target::Sotto => format!("starting {}", options.sfu_bin.display()),
            Target::Janus => "starting janus (Debian: apt-get install janus)".to_owned(),
        })?;
    let pid = sfu.id().context("the SFU exited at once")?.to_string();

    // Rooms, once the SFU is up.
    let setup_started = Instant::now();
    let mut rooms = Vec::new();
    let mut janus_session = None;
    // The rooms' creator stays connected through the run (a room whose creator leaves
    // before anyone joins is gone).
    let mut creator = None;
    match &signaling_server {
        Some(server) => {
            let url = server.ws_url();
            let creator = creator.insert(connect(&url).await?);
            for _ in 0..options.rooms {
                let invite = create_room(creator, per_room).await?;
                rooms.push(Arc::new(Room::Sotto {
                    url: url.clone(),
                    invite,
                }));
            }
        }
        None => {
            let session = Arc::new(crate::janus::Session::create(sfu_http).await?);
            let mut control = session.attach().await?;
            for room in 0..options.rooms {
                control
                    .message(
                        json!({
                            "request": "create",
                            "room": janus_room(room),
                            "publishers": options.publishers.max(1),
                            "audiocodec": "opus",
                            "notify_joining": false,
                        }),
                        None,
                    )
                    .await
                    .context("creating a VideoRoom")?;
                rooms.push(Arc::new(Room::Janus {
                    session: session.clone(),
                    room: janus_room(room),
                    published: watch::channel(0).0,
                }));
            }
            janus_session = Some(session);
        }
    }
    let rss_idle = procfs::status(&pid)?.rss_kib;

    let totals = Arc::new(Totals::default());
    let (phase_tx, phase) = watch::channel(Phase::Setup);
    let handshakes = Arc::new(Semaphore::new(32));
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for room in &rooms {
        for i in 0..options.publishers + options.subscribers {
            let participant = Participant {
                room: room.clone(),
                publisher: (i < options.publishers).then_some(i),
                publishers: options.publishers,
                totals: totals.clone(),
                phase: phase.clone(),
                handshakes: handshakes.clone(),
                local_ip,
                epoch,
            };
            tasks.push(tokio::spawn(participant.run()));
        }
    }

    // Every subscriber hears every publisher of its room: then warm up and measure.
    let subscribers = options.rooms * options.subscribers;
    let deadline = Instant::now() + Duration::from_secs(60 + subscribers as u64 / 20);
    let mut setup_failure = None;
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
            let log = std::fs::read_to_string(dir.path().join("janus.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let failure = format!(
                "{target:?}: only {} of {subscribers} subscribers were receiving in time; {} participant(s) failed{}{}",
                totals.ready.load(Ordering::Relaxed),
                failures.len(),
                failures
                    .first()
                    .map(|f| format!(", the first: {f}"))
                    .unwrap_or_default(),
                tail.into_iter()
                    .rev()
                    .map(|l| format!("\n  janus: {l}"))
                    .collect::<String>()
            );
            if totals.ready.load(Ordering::Relaxed) == 0 {
                bail!(failure);
            }
            // Measured all the same, over those that are receiving: the report says how
            // many, and the bench fails after printing it.
            eprintln!("{failure}");
            setup_failure = Some(failure);
            break;
        }
        if let Some(status) = sfu.try_wait()? {
            bail!("the SFU exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    let subscribers_ready = totals.ready.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ticks = procfs::ticks_per_sec();
    let before = match target {
        Target::Sotto => metrics(sfu_http).await?,
        Target::Janus => Metrics(String::new()),
    };
    let cpu_before = procfs::cpu_time(&pid, ticks)?;
    let threads_before = procfs::thread_cpu_times(&pid, ticks)?;
    let started = Instant::now();
    phase_tx.send_replace(Phase::Measure);
    tokio::time::sleep(options.duration).await;
    let rss_loaded = procfs::status(&pid)?.rss_kib;
    let after = match target {
        Target::Sotto => metrics(sfu_http).await?,
        Target::Janus => Metrics(String::new()),
    };
    let cpu_after = procfs::cpu_time(&pid, ticks)?;
    let threads_after = procfs::thread_cpu_times(&pid, ticks)?;
    let window = started.elapsed().as_secs_f64();
    phase_tx.send_replace(Phase::Stop);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    drop((janus_session, creator));
    // Stopped as a user stops it, with Ctrl-C (a profiling build writes its profile then);
    // killed if it takes more than 10 s.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    if tokio::time::timeout(Duration::from_secs(10), sfu.wait())
        .await
        .is_err()
    {
        let _ = sfu.kill().await;
    }

    let received = totals.received.load(Ordering::Relaxed);
    let expected = totals.expected.load(Ordering::Relaxed).max(1);
    let delivered = received as f64;
    // Janus counts no forwarded packets; for it, forwarded is what its subscribers got.
    let forwarded = match target {
        Target::Sotto => {
            after.counter("sotto_sfu_forwarded_total") - before.counter("sotto_sfu_forwarded_total")
        }
        Target::Janus => delivered,
    };
    let cpu = (cpu_after - cpu_before).as_secs_f64();
    let per_cpu = |packets: f64| if cpu > 0.0 { packets / cpu } else { 0.0 };
    let threads = thread_split(&threads_before, &threads_after, window);
    let latency = after.histogram_delta(&before, "sotto_sfu_forward_latency_seconds");
    let mut delays = std::mem::take(
        &mut *totals
            .delays
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    delays.sort_unstable();
    let delay = |q: f64| {
        (!delays.is_empty()).then(|| f64::from(delays[((delays.len() - 1) as f64 * q) as usize]))
    };
    Ok(LoadReport {
        target,
        sfu_cpu: options.sfu_cpu.clone(),
        sfu_workers: options.sfu_workers,
        janus_loops: options.janus_loops,
        veth: options.veth,
        rooms: options.rooms,
        publishers_per_room: options.publishers,
        subscribers_per_room: options.subscribers,
        window_s: window,
        forwarded_per_s: forwarded / window,
        delivered_per_s: delivered / window,
        sfu_cpu_cores: cpu / window,
        send_threads_cores: threads.send,
        other_threads_cores: threads.other,
        busiest_thread_cores: threads.busiest,
        forwarded_per_cpu_s: per_cpu(forwarded),
        delivered_per_cpu_s: per_cpu(delivered),
        loss_percent: 100.0 * (1.0 - received as f64 / expected as f64).max(0.0),
        latency_p50_us: quantile(&latency, 0.5).map(|s| s * 1e6),
        latency_p99_us: quantile(&latency, 0.99).map(|s| s * 1e6),
        delay_p50_us: delay(0.5),
        delay_p99_us: delay(0.99),
        sfu_rss_idle_kib: rss_idle,
        sfu_rss_loaded_kib: rss_loaded,
        rss_per_subscriber_kib: rss_loaded.saturating_sub(rss_idle) as f64
            / (options.rooms * (options.publishers + options.subscribers)).max(1) as f64,
        setup_s,
        subscribers_ready,
        setup_failure,
    })
}

/// A room of the run, at one SFU or the other.
enum Room {
    Sotto {
        url: String,
        invite: RoomInvite,
    },
    Janus {
        session: Arc<crate::janus::Session>,
        room: u64,
        /// How many of the room's publishers are connected: subscribers join once all are
        /// (Janus offers a subscriber only feeds whose connection is up).
        published: watch::Sender<usize>,
    },
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
    room: Arc<Room>,
    /// Its index among the room's publishers, if it publishes.
    publisher: Option<usize>,
    publishers: usize,
    totals: Arc<Totals>,
    phase: watch::Receiver<Phase>,
    handshakes: Arc<Semaphore>,
    /// The address its socket binds.
    local_ip: IpAddr,
    /// Publishers stamp their RTP timestamps (48 kHz) from this instant.
    epoch: Instant,
}

/// Per forwarded SSRC: the extended sequence numbers seen while measuring, and each
/// packet's delay relative to the first one's.
#[derive(Default)]
struct Seen {
    first: Option<u64>,
    highest: u64,
    count: u64,
    last: u16,
    /// The first packet's RTP timestamp and arrival (µs since the epoch).
    origin: (u32, i64),
    /// Each packet's arrival minus its timestamp, relative to the first packet's, µs.
    delays: Vec<i64>,
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

    /// Notes a packet stamped `timestamp` (48 kHz, from the publisher's clock) arriving at
    /// `arrival_us`. SFUs shift timestamps by a constant per stream, so the differences
    /// between packets are the publisher's, and the delays relative to each other hold.
    fn time(&mut self, timestamp: u32, arrival_us: i64) {
        if self.delays.is_empty() {
            self.origin = (timestamp, arrival_us);
        }
        let sent_us = i64::from(timestamp.wrapping_sub(self.origin.0) as i32) * 1000 / 48;
        self.delays.push(arrival_us - self.origin.1 - sent_us);
    }

    /// Each delay above the fastest packet's, µs.
    fn delays_above_fastest(&self) -> impl Iterator<Item = u32> + '_ {
        let fastest = self.delays.iter().copied().min().unwrap_or_default();
        self.delays
            .iter()
            .map(move |d| u32::try_from(d - fastest).unwrap_or(u32::MAX))
    }

    fn expected(&self) -> u64 {
        self.first.map_or(0, |first| self.highest - first + 1)
    }
}

impl Participant {
    async fn run(self) -> anyhow::Result<()> {
        let socket = UdpSocket::bind(SocketAddr::new(self.local_ip, 0)).await?;
        let addr = socket.local_addr()?;
        let ssrc: u32 = rand::random();
        let (client, signaling) = match &*self.room {
            Room::Sotto { url, invite } => {
                let _permit = self.handshakes.clone().acquire_owned().await?;
                let (client, signaling) = self.join_sotto(url, invite, addr, ssrc).await?;
                (client, Some(signaling))
            }
            Room::Janus {
                session,
                room,
                published,
            } => {
                let client = self
                    .join_janus(session, *room, published, addr, ssrc)
                    .await?;
                (client, None)
            }
        };
        self.media(client, socket, ssrc, signaling).await
    }

    /// Joins our SFU's room through signaling and sends the offer; the answer and the
    /// SFU's offers arrive during [`Participant::media`].
    async fn join_sotto(
        &self,
        url: &str,
        invite: &RoomInvite,
        addr: SocketAddr,
        ssrc: u32,
    ) -> anyhow::Result<(Client, SignalingClient)> {
        let signaling = connect(url).await?;
        let (_, sfu) = signaling
            .join_group_room(&invite.room_id, &invite.invite_token)
            .await?;
        let sfu = sfu.context("the room has no SFU")?;
        let mut client = Client::new("load", addr, &[Publish::audio(ssrc)], Instant::now())?;
        let offer = client.offer(Instant::now())?;
        signaling
            .sender()
            .send_call_signal(
                sfu,
                CallSignal::Offer(Offer {
                    call_id: invite.room_id.0.clone(),
                    sdp: offer,
                    ice_restart: false,
                    e2ee: None,
                }),
            )
            .await?;
        Ok((client, signaling))
    }

    /// Joins a Janus VideoRoom: a publisher offers its audio and applies Janus's answer; a
    /// subscriber, once every publisher of the room is in, asks for all their feeds and
    /// answers Janus's offer.
    async fn join_janus(
        &self,
        session: &crate::janus::Session,
        room: u64,
        published: &watch::Sender<usize>,
        addr: SocketAddr,
        ssrc: u32,
    ) -> anyhow::Result<Client> {
        if self.publisher.is_none() {
            published
                .subscribe()
                .wait_for(|n| *n >= self.publishers)
                .await?;
        }
        let _permit = self.handshakes.clone().acquire_owned().await?;
        let mut handle = session.attach().await?;
        match self.publisher {
            Some(index) => {
                let mut client =
                    Client::new("load", addr, &[Publish::audio(ssrc)], Instant::now())?;
                let offer = client.offer(Instant::now())?;
                let answer = handle
                    .message(
                        json!({"request": "joinandconfigure", "ptype": "publisher",
                               "room": room, "id": janus_feed(index)}),
                        Some(("offer", &offer)),
                    )
                    .await?;
                let answer = answer.context("Janus answered a publisher without SDP")?;
                client.apply_answer(&answer, Instant::now())?;
                Ok(client)
            }
            None => {
                let streams: Vec<_> = (0..self.publishers)
                    .map(|i| json!({"feed": janus_feed(i)}))
                    .collect();
                let join = json!({"request": "join", "ptype": "subscriber", "room": room,
                                  "streams": streams});
                // Janus's side of a publisher's DTLS may finish a moment after ours.
                let mut tries = 0;
                let offer = loop {
                    match handle.message(join.clone(), None).await {
                        Err(err) if tries < 50 && err.to_string().contains("No such feed") => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => break other?,
                    }
                };
                let offer = offer.context("Janus offered a subscriber no SDP")?;
                let mut client = Client::new("load", addr, &[], Instant::now())?;
                let answer = client.accept_offer(&offer, Instant::now())?;
                handle
                    .message(json!({"request": "start"}), Some(("answer", &answer)))
                    .await?;
                Ok(client)
            }
        }
    }

    /// Sends (a publisher) or counts (a subscriber) until the bench stops.
    async fn media(
        self,
        mut client: Client,
        socket: UdpSocket,
        ssrc: u32,
        mut signaling: Option<SignalingClient>,
    ) -> anyhow::Result<()> {
        let sender = signaling.as_ref().map(SignalingClient::sender);
        let mut phase = self.phase.clone();
        let mut buf = vec![0u8; 2048];
        let mut connected = false;
        let mut tracks = 0usize;
        let mut counting = false;
        let mut seen: HashMap<u32, Seen> = HashMap::new();
        let mut seq = 0u16;
        let mut next_send = tokio::time::Instant::now();
        loop {
            let was_connected = connected;
            flush(&mut client, &socket, &mut connected, &mut tracks).await;
            if let (false, true, Some(_), Room::Janus { published, .. }) =
                (was_connected, connected, self.publisher, &*self.room)
            {
                published.send_modify(|n| *n += 1);
            }
            if self.publisher.is_none() && !counting && tracks >= self.publishers {
                counting = true;
                self.totals.ready.fetch_add(1, Ordering::Relaxed);
            }
            let measuring = *phase.borrow() == Phase::Measure;
            let timeout = client
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(100));
            let send_at = if self.publisher.is_some() && connected {
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
                            let word = |at: usize| u32::from_be_bytes([datagram[at], datagram[at + 1], datagram[at + 2], datagram[at + 3]]);
                            let seen = seen.entry(word(8)).or_default();
                            seen.add(u16::from_be_bytes([datagram[2], datagram[3]]));
                            let arrival = i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
                            seen.time(word(4), arrival);
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
                    // The timestamp says when it left (48 kHz from the epoch), so that
                    // subscribers can time its trip.
                    let outgoing = Outgoing {
                        seq,
                        timestamp: (self.epoch.elapsed().as_micros() * 48 / 1000) as u32,
                        marker: false,
                        frame: None,
                        payload: Bytes::from_static(&[0xFC; 80]),
                    };
                    seq = seq.wrapping_add(1);
                    let _ = client.send_rtp(ssrc, outgoing, Instant::now());
                }
                event = next_event(&mut signaling) => match (event, &sender) {
                    (Some(Event::Call { from, signal }), Some(sender)) => on_signal(&mut client, sender, from, signal).await,
                    (Some(_), _) => {}
                    (None, _) => bail!("signaling closed"),
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
        if let Ok(mut delays) = self.totals.delays.lock() {
            for stream in seen.values() {
                delays.extend(stream.delays_above_fastest());
            }
        }
        Ok(())
    }
}

/// The next signaling event, or never (Janus's participants negotiate before media).
async fn next_event(signaling: &mut Option<SignalingClient>) -> Option<Event> {
    match signaling {
        Some(signaling) => signaling.next_event().await,
        None => std::future::pending().await,
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
    Ok(Metrics(
        crate::janus::http(addr, "GET", "/metrics", None).await?,
    ))
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
