//! `sotto-bench relay`: the netsim as a UDP relay between two real endpoints. Endpoint A
//! sends to the relay's `listen` address; the relay forwards through the forward
//! [`Link`] to `target` (endpoint B) from a second socket, and what B sends back to that
//! socket goes through the backward link to the address A last sent from. Each direction
//! has its own seeded link, so a run is repeatable packet for packet when the endpoints
//! send the same packets at the same times. Bounded in time; the counters come back at the
//! end.
//!
//! Several A endpoints may use one relay (the participants of a group call in front of an
//! SFU): each new A address gets its own leg, like a NAT mapping: its own socket toward B
//! and its own pair of links (leg `i` seeded `seed + 2i` forward and `seed + 2i + 1`
//! backward, so a single endpoint's run is what it always was). The counters add up over
//! the legs.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use sotto_netsim::{Impairment, Link, Stats};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How the relay is set up.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where endpoint A sends.
    pub listen: SocketAddr,
    /// Endpoint B.
    pub target: SocketAddr,
    /// The local address the relay sends to B from (port 0: any).
    pub via: SocketAddr,
    /// A to B.
    pub forward: Impairment,
    /// B to A.
    pub backward: Impairment,
    /// The forward link's seed (the backward one uses the next).
    pub seed: u64,
    /// Stop after this long.
    pub duration: Duration,
}

impl RelayConfig {
    /// `scenario`'s two directions between `listen` and `target` (the relay sends to B
    /// from any port of `listen`'s address), seeded `seed`, for at most `duration`.
    pub fn for_scenario(
        scenario: &crate::scenario::Scenario,
        seed: u64,
        listen: SocketAddr,
        target: SocketAddr,
        duration: Duration,
    ) -> RelayConfig {
        let (forward, backward) = scenario.directions();
        RelayConfig {
            listen,
            target,
            via: SocketAddr::new(listen.ip(), 0),
            forward,
            backward,
            seed,
            duration,
        }
    }
}

/// A relay running in a task of its own.
pub struct RunningRelay {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<RelayReport>>,
}

impl RunningRelay {
    /// Stops it and gives its counters (`None` if its task failed).
    pub async fn stop(self) -> Option<RelayReport> {
        let _ = self.stop.send(());
        self.task.await.ok().and_then(Result::ok)
    }
}

/// One direction's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirectionReport {
    /// Datagrams received from the sender.
    pub received: u64,
    /// Datagrams sent on to the receiver (duplicates included).
    pub forwarded: u64,
    /// Lost by the loss model.
    pub lost: u64,
    /// Dropped by the bottleneck queue.
    pub queue_dropped: u64,
    /// Dropped in an outage.
    pub outage_dropped: u64,
    /// Sent twice.
    pub duplicated: u64,
    /// Forwarded after a datagram that came in later.
    pub reordered: u64,
    /// Due but not sent (the run ended, or the socket refused them).
    pub undelivered: u64,
}

impl DirectionReport {
    fn add(&mut self, other: DirectionReport) {
        self.received += other.received;
        self.forwarded += other.forwarded;
        self.lost += other.lost;
        self.queue_dropped += other.queue_dropped;
        self.outage_dropped += other.outage_dropped;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.undelivered += other.undelivered;
    }

    fn from_stats(stats: Stats, undelivered: u64) -> Self {
        DirectionReport {
            received: stats.sent,
            forwarded: stats.delivered.saturating_sub(undelivered),
            lost: stats.lost,
            queue_dropped: stats.queue_dropped,
            outage_dropped: stats.outage_dropped,
            duplicated: stats.duplicated,
            reordered: stats.reordered,
            undelivered,
        }
    }
}

/// What a relay run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RelayReport {
    /// A to B.
    pub forward: DirectionReport,
    /// B to A.
    pub backward: DirectionReport,
    /// Datagrams from neither endpoint (ignored).
    pub strangers: u64,
}

/// A bound relay, ready to run (binding first lets a caller learn the addresses).
pub struct Relay {
    config: RelayConfig,
    a_side: UdpSocket,
    b_side: UdpSocket,
}

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

impl Relay {
    /// Binds both sockets.
    pub async fn bind(config: RelayConfig) -> std::io::Result<Relay> {
        let a_side = UdpSocket::bind(config.listen).await?;
        let b_side = UdpSocket::bind(config.via).await?;
        Ok(Relay {
            config,
            a_side,
            b_side,
        })
    }

    /// Changes where the relay forwards A's datagrams, before it runs (for an endpoint
    /// whose port is known only once the relay's own address has been handed out).
    pub fn set_target(&mut self, target: SocketAddr) {
        self.config.target = target;
    }

    /// Where endpoint A should send.
    pub fn listen_addr(&self) -> std::io::Result<SocketAddr> {
        self.a_side.local_addr()
    }

    /// The address B sees the relay's datagrams come from.
    pub fn via_addr(&self) -> std::io::Result<SocketAddr> {
        self.b_side.local_addr()
    }

    /// Relays until the configured duration has passed.
    pub async fn run(self) -> std::io::Result<RelayReport> {
        self.run_until(std::future::pending()).await
    }

    /// Runs in a task of its own until the configured duration has passed or it is
    /// stopped.
    pub fn spawn(self) -> RunningRelay {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run_until(async move {
            let _ = stopped.await;
        }));
        RunningRelay { stop, task }
    }

    /// Relays until the configured duration has passed or `stop` completes.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<RelayReport> {
        let mut stop = std::pin::pin!(stop);
        let Relay {
            config,
            a_side,
            b_side,
        } = self;
        let start = Instant::now();
        let end = start + config.duration;
        // Datagrams from B, by leg, from the legs' reader tasks.
        let (from_b, mut from_b_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<u8>)>();
        let strangers = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut legs: Vec<Leg> = Vec::new();
        let mut first_socket = Some(b_side);
        let mut buf_a = vec![0u8; MAX_DATAGRAM];
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let elapsed = now - start;
            // Send what is due.
            for leg in &mut legs {
                while let Some(packet) = leg.forward.poll(elapsed) {
                    if leg.socket.send_to(&packet, config.target).await.is_err() {
                        leg.undelivered_forward += 1;
                    }
                }
                while let Some(packet) = leg.backward.poll(elapsed) {
                    if a_side.send_to(&packet, leg.a_addr).await.is_err() {
                        leg.undelivered_backward += 1;
                    }
                }
            }
            let next_due = legs
                .iter()
                .flat_map(|leg| [leg.forward.next_due(), leg.backward.next_due()])
                .flatten()
                .min()
                .map_or(end, |due| (start + due).min(end));
            tokio::select! {
                // A receive error is an ICMP error of an earlier send on Linux (the
                // endpoint is not up yet, or has gone): not the relay's end.
                got = a_side.recv_from(&mut buf_a) => {
                    let Ok((len, from)) = got else { continue };
                    let index = match legs.iter().position(|leg| leg.a_addr == from) {
                        Some(index) => index,
                        None => {
                            let socket = match first_socket.take() {
                                Some(socket) => socket,
                                None => UdpSocket::bind(SocketAddr::new(config.via.ip(), 0)).await?,
                            };
                            let index = legs.len();
                            legs.push(Leg::open(
                                index,
                                from,
                                socket,
                                &config,
                                from_b.clone(),
                                strangers.clone(),
                            ));
                            index
                        }
                    };
                    legs[index].forward.send(start.elapsed(), len, buf_a[..len].to_vec());
                }
                Some((index, packet)) = from_b_rx.recv() => {
                    if let Some(leg) = legs.get_mut(index) {
                        leg.backward.send(start.elapsed(), packet.len(), packet);
                    }
                }
                _ = tokio::time::sleep_until(next_due) => {}
                _ = &mut stop => break,
            }
        }
        let mut report = RelayReport {
            strangers: strangers.load(std::sync::atomic::Ordering::Relaxed),
            ..RelayReport::default()
        };
        for leg in legs {
            let (forward, backward) = leg.finish();
            report.forward.add(forward);
            report.backward.add(backward);
        }
        Ok(report)
    }
}

/// One A endpoint's path: its socket toward B, its links, and the task reading B's side.
struct Leg {
    a_addr: SocketAddr,
    socket: std::sync::Arc<UdpSocket>,
    forward: Link<Vec<u8>>,
    backward: Link<Vec<u8>>,
    undelivered_forward: u64,
    undelivered_backward: u64,
    reader: tokio::task::JoinHandle<()>,
}

impl Leg {
    fn open(
        index: usize,
        a_addr: SocketAddr,
        socket: UdpSocket,
        config: &RelayConfig,
        from_b: tokio::sync::mpsc::UnboundedSender<(usize, Vec<u8>)>,
        strangers: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Leg {
        let socket = std::sync::Arc::new(socket);
        let reading = socket.clone();
        let target = config.target;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                // A receive error is an ICMP error of an earlier send: keep reading.
                let Ok((len, from)) = reading.recv_from(&mut buf).await else {
                    continue;
                };
                if from != target {
                    strangers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else if from_b.send((index, buf[..len].to_vec())).is_err() {
                    break;
                }
            }
        });
        let seed = config.seed.wrapping_add(2 * index as u64);
        Leg {
            a_addr,
            socket,
            forward: Link::new(config.forward.clone(), seed),
            backward: Link::new(config.backward.clone(), seed.wrapping_add(1)),
            undelivered_forward: 0,
            undelivered_backward: 0,
            reader,
        }
    }

    /// Stops reading; what was still in flight never arrives.
    fn finish(mut self) -> (DirectionReport, DirectionReport) {
        self.reader.abort();
        let far = Duration::from_secs(u64::MAX / 4);
        while self.forward.poll(far).is_some() {
            self.undelivered_forward += 1;
        }
        while self.backward.poll(far).is_some() {
            self.undelivered_backward += 1;
        }
        (
            DirectionReport::from_stats(self.forward.stats(), self.undelivered_forward),
            DirectionReport::from_stats(self.backward.stats(), self.undelivered_backward),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_netsim::Loss;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_both_ways_with_each_directions_loss() {
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let loss = |rate| Impairment {
            loss: Loss::Uniform { rate },
            delay_ms: 5.0,
            ..Default::default()
        };
        let relay = Relay::bind(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            target: b.local_addr().unwrap(),
            via: "127.0.0.1:0".parse().unwrap(),
            forward: loss(0.2),
            backward: loss(0.0),
            seed: 7,
            duration: Duration::from_secs(4),
        })
        .await
        .unwrap();
        let relay_addr = relay.listen_addr().unwrap();
        let via = relay.via_addr().unwrap();
        let running = tokio::spawn(relay.run());

        // B echoes what it gets; A sends 1,000 numbered datagrams and counts the echoes.
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut got = 0u64;
            while let Ok(Ok((len, from))) =
                tokio::time::timeout(Duration::from_millis(1500), b.recv_from(&mut buf)).await
            {
                assert_eq!(from, via);
                got += 1;
                b.send_to(&buf[..len], from).await.unwrap();
            }
            got
        });
        // A reads its echoes while it sends (a socket buffer holds only a few hundred).
        let a = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let reader = {
            let a = a.clone();
            tokio::spawn(async move {
                let mut echoed = 0u64;
                let mut buf = [0u8; 64];
                while let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(1500), a.recv_from(&mut buf)).await
                {
                    echoed += 1;
                }
                echoed
            })
        };
        for i in 0u32..1000 {
            a.send_to(&i.to_be_bytes(), relay_addr).await.unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let echoed = reader.await.unwrap();
        let got = echo.await.unwrap();
        let report = running.await.unwrap().unwrap();
        assert_eq!(report.forward.received, 1000);
        assert_eq!(report.forward.forwarded, got);
        assert_eq!(report.forward.lost + got, 1000, "{report:?}");
        // 20 % forward loss: within 5 standard deviations over 1,000 packets.
        assert!(
            (got as f64 - 800.0).abs() < 5.0 * (1000.0f64 * 0.2 * 0.8).sqrt(),
            "{got}"
        );
        assert_eq!(report.backward.received, got);
        assert_eq!(report.backward.lost, 0);
        assert_eq!(echoed, got);
        assert_eq!(report.strangers, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_a_endpoint_gets_its_own_leg() {
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::bind(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            target: b.local_addr().unwrap(),
            via: "127.0.0.1:0".parse().unwrap(),
            forward: Impairment::default(),
            backward: Impairment::default(),
            seed: 1,
            duration: Duration::from_secs(3),
        })
        .await
        .unwrap();
        let relay_addr = relay.listen_addr().unwrap();
        let running = tokio::spawn(relay.run());
        // B answers each datagram with its own bytes, to whichever relay socket sent it.
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut sources = std::collections::BTreeSet::new();
            while let Ok(Ok((len, from))) =
                tokio::time::timeout(Duration::from_millis(800), b.recv_from(&mut buf)).await
            {
                sources.insert(from);
                b.send_to(&buf[..len], from).await.unwrap();
            }
            sources.len()
        });
        let mut clients = Vec::new();
        for name in [b"one", b"two"] {
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for _ in 0..20 {
                a.send_to(name, relay_addr).await.unwrap();
            }
            clients.push((name, a));
        }
        for (name, a) in &clients {
            let mut buf = [0u8; 64];
            for _ in 0..20 {
                let (len, _) = tokio::time::timeout(Duration::from_secs(1), a.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                // Only its own echoes come back to each endpoint.
                assert_eq!(&buf[..len], &name[..]);
            }
        }
        assert_eq!(
            echo.await.unwrap(),
            2,
            "one relay socket toward B per A endpoint"
        );
        let report = running.await.unwrap().unwrap();
        assert_eq!(report.forward.received, 40);
        assert_eq!(report.backward.forwarded, 40);
    }
}
