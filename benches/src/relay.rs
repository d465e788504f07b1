//! `sotto-bench relay`: the netsim as a UDP relay between two real endpoints. Endpoint A
//! sends to the relay's `listen` address; the relay forwards through the forward
//! [`Link`] to `target` (endpoint B) from a second socket, and what B sends back to that
//! socket goes through the backward link to the address A last sent from. Each direction
//! has its own seeded link, so a run is repeatable packet for packet when the endpoints
//! send the same packets at the same times. Bounded in time; the counters come back at the
//! end.

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
        let mut forward: Link<Vec<u8>> = Link::new(config.forward.clone(), config.seed);
        let mut backward: Link<Vec<u8>> =
            Link::new(config.backward.clone(), config.seed.wrapping_add(1));
        let mut a_addr: Option<SocketAddr> = None;
        let mut strangers = 0u64;
        let (mut undelivered_forward, mut undelivered_backward) = (0u64, 0u64);
        let mut buf_a = vec![0u8; MAX_DATAGRAM];
        let mut buf_b = vec![0u8; MAX_DATAGRAM];
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let elapsed = now - start;
            // Send what is due.
            while let Some(packet) = forward.poll(elapsed) {
                if b_side.send_to(&packet, config.target).await.is_err() {
                    undelivered_forward += 1;
                }
            }
            while let Some(packet) = backward.poll(elapsed) {
                let sent = match a_addr {
                    Some(addr) => a_side.send_to(&packet, addr).await.is_ok(),
                    None => false,
                };
                if !sent {
                    undelivered_backward += 1;
                }
            }
            let next_due = [forward.next_due(), backward.next_due()]
                .into_iter()
                .flatten()
                .min()
                .map_or(end, |due| (start + due).min(end));
            tokio::select! {
                // A receive error is an ICMP error of an earlier send on Linux (the
                // endpoint is not up yet, or has gone): not the relay's end.
                got = a_side.recv_from(&mut buf_a) => {
                    let Ok((len, from)) = got else { continue };
                    a_addr = Some(from);
                    forward.send(start.elapsed(), len, buf_a[..len].to_vec());
                }
                got = b_side.recv_from(&mut buf_b) => {
                    let Ok((len, from)) = got else { continue };
                    if from == config.target {
                        backward.send(start.elapsed(), len, buf_b[..len].to_vec());
                    } else {
                        strangers += 1;
                    }
                }
                _ = tokio::time::sleep_until(next_due) => {}
                _ = &mut stop => break,
            }
        }
        // What was still in flight never arrives.
        let far = Duration::from_secs(u64::MAX / 4);
        while forward.poll(far).is_some() {
            undelivered_forward += 1;
        }
        while backward.poll(far).is_some() {
            undelivered_backward += 1;
        }
        Ok(RelayReport {
            forward: DirectionReport::from_stats(forward.stats(), undelivered_forward),
            backward: DirectionReport::from_stats(backward.stats(), undelivered_backward),
            strangers,
        })
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
}
