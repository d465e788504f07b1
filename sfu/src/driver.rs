//! The thin tokio driver: one UDP socket for every leg, the core behind a mutex that is
//! held only while the core runs (never across an await), and a wake-up for when
//! signaling changed the core from outside.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::core::{Sfu, SignalOut};

/// Largest datagram read (an MTU-sized packet fits with room to spare).
const RECV_BUFFER: usize = 2048;
/// How long the loop sleeps when no leg has a deadline.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Shared access to a running SFU core.
#[derive(Clone)]
pub struct SfuHandle {
    sfu: Arc<Mutex<Sfu>>,
    wake: Arc<Notify>,
    local_addr: SocketAddr,
    /// Seconds from a datagram's arrival to the end of sending what it caused (for
    /// RTP: the forwarded copies), per datagram that caused any sending.
    pub forward_latency: Histogram,
}

/// Bucket bounds of the forward-latency histogram, seconds (25 µs to about 100 ms).
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(25e-6, 2.0, 13)
}

impl SfuHandle {
    /// Runs `f` on the core, then wakes the driver to send what it queued.
    pub fn with<R>(&self, f: impl FnOnce(&mut Sfu) -> R) -> R {
        let result = f(&mut self.lock());
        self.wake.notify_one();
        result
    }

    /// The UDP address every leg uses.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn lock(&self) -> MutexGuard<'_, Sfu> {
        // The core has no invariants a panic elsewhere could break half-way.
        self.sfu
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running SFU.
pub struct Running {
    /// Access to the core.
    pub handle: SfuHandle,
    /// Signaling the core wants sent (SFU-side offers), in order.
    pub signals: mpsc::UnboundedReceiver<SignalOut>,
    /// The driver task.
    pub task: JoinHandle<()>,
}

/// Binds `addr` and runs the SFU on it. `public_addr` is the address put in candidates
/// (the bound one when `None`).
pub async fn start(addr: SocketAddr, public_addr: Option<SocketAddr>) -> std::io::Result<Running> {
    let socket = UdpSocket::bind(addr).await?;
    let local_addr = public_addr.unwrap_or(socket.local_addr()?);
    let handle = SfuHandle {
        sfu: Arc::new(Mutex::new(Sfu::new(local_addr))),
        wake: Arc::new(Notify::new()),
        local_addr,
        forward_latency: Histogram::new(latency_buckets()),
    };
    let (signals_tx, signals) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(handle.clone(), socket, signals_tx));
    Ok(Running {
        handle,
        signals,
        task,
    })
}

async fn run(handle: SfuHandle, socket: UdpSocket, signals: mpsc::UnboundedSender<SignalOut>) {
    let mut buf = vec![0u8; RECV_BUFFER];
    // When the datagram whose consequences are being sent arrived.
    let mut arrived: Option<Instant> = None;
    loop {
        let (transmits, deadline) = {
            let mut sfu = handle.lock();
            let mut out = Vec::new();
            while let Some(transmit) = sfu.poll_transmit() {
                out.push(transmit);
            }
            while let Some(signal) = sfu.poll_signal() {
                let _ = signals.send(signal);
            }
            (out, sfu.poll_timeout())
        };
        let sent_any = !transmits.is_empty();
        for transmit in transmits {
            // A failed send is a lost datagram, as on the wire; the protocols recover.
            let _ = socket.send_to(&transmit.payload, transmit.to).await;
        }
        if let Some(at) = arrived.take()
            && sent_any
        {
            handle.forward_latency.observe(at.elapsed().as_secs_f64());
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + IDLE_TICK);
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let now = Instant::now();
                    arrived = Some(now);
                    handle.lock().handle_datagram(now, from, &buf[..n]);
                }
                Err(err) => tracing::debug!(%err, "UDP receive"),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                handle.lock().handle_timeout(Instant::now());
            }
            _ = handle.wake.notified() => {}
        }
    }
}
