//! The thin tokio driver: one UDP socket for every participant, the core behind a mutex
//! that is held only while the core runs (never across an await), and a wake-up for when
//! signaling changed the core from outside.
//!
//! Forwarded media leaves through send workers, threads `sfu-send-N`, each on its own
//! handle of the same socket. With one worker (the default, see [`default_workers`]) the
//! driver sends itself, after letting go of the core: a thread would only take turns with
//! it. The core queues each subscriber's copies in that subscriber's lane (see
//! [`Sfu::lanes`]); the driver hands each lane's filled outboxes to the lane's worker,
//! which sends them in order with `sendmmsg` (one system call per outbox of up to
//! [`crate::core::fanout::OUTBOX_CAPACITY`] datagrams) and hands the emptied outboxes
//! back. So the kernel's share of forwarding (most of it) runs on every core while the
//! core itself (receive, decrypt, rewrite and encrypt) runs on one, and each subscriber's
//! packets stay in order. The transports' own datagrams (STUN, DTLS, RTCP) go out from
//! the driver one by one. Datagrams already waiting are read under one lock, so their
//! copies go out together.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use prometheus_client::metrics::histogram::Histogram;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::core::fanout::Outbox;
use crate::core::{Sfu, SignalOut};

/// Largest datagram read (an MTU-sized packet fits with room to spare).
const RECV_BUFFER: usize = 2048;
/// The socket buffers asked for, bytes.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams read after the first one under one lock, if already waiting.
const READ_AHEAD: usize = 7;
/// ... unless this many outboxes (1,024 datagrams) already wait to be sent: a backlog read
/// at once would hold every copy of it in memory (at 1,000 subscribers, 8 packets made
/// 8,000 buffers, kept for the next burst).
const READ_AHEAD_OUTBOXES: usize = 16;
/// How long the loop sleeps when no participant has a deadline.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// Outboxes (of up to 64 datagrams) per worker that may wait for sending before the
/// driver stops reading: beyond it the socket's receive queue fills instead, and the
/// kernel drops, as it would for one thread that cannot keep up.
const IN_FLIGHT_PER_WORKER: usize = 64;

/// Shared access to a running SFU core.
#[derive(Clone)]
pub struct SfuHandle {
    sfu: Arc<Mutex<Sfu>>,
    wake: Arc<Notify>,
    local_addr: SocketAddr,
    /// Seconds from a datagram's arrival to the end of sending the forwarded copies it
    /// caused (with the datagrams read in the same burst), once per send worker that sent
    /// some of them.
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

    /// The UDP address every participant uses.
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

/// The send workers used when not told: one, the driver itself. Measured on a 2-vCPU
/// machine (BENCHMARKS.md, "Send workers"), two worker threads forwarded about a fifth
/// less per CPU-second than the driver alone (the copies are written on one core and sent
/// from another, and the threads share one socket), so more are for machines with cores
/// to spare, asked for with `--workers`.
pub fn default_workers() -> usize {
    1
}

/// Binds `addr` and runs the SFU on it with [`default_workers`] send workers.
/// `public_addr` is the address put in candidates (the bound one when `None`).
pub async fn start(addr: SocketAddr, public_addr: Option<SocketAddr>) -> std::io::Result<Running> {
    start_with_workers(addr, public_addr, default_workers()).await
}

/// [`start`] with `workers` send workers (at least one).
pub async fn start_with_workers(
    addr: SocketAddr,
    public_addr: Option<SocketAddr>,
    workers: usize,
) -> std::io::Result<Running> {
    let socket = UdpSocket::bind(addr).await?;
    enlarge_buffers(&socket);
    let local_addr = public_addr.unwrap_or(socket.local_addr()?);
    let mut core = Sfu::new(local_addr);
    core.set_lanes(workers.max(1));
    // The one wall-clock read: sender reports' NTP times count from it.
    if let Ok(wall) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        core.set_wall_clock(wall);
    }
    let handle = SfuHandle {
        sfu: Arc::new(Mutex::new(core)),
        wake: Arc::new(Notify::new()),
        local_addr,
        forward_latency: Histogram::new(latency_buckets()),
    };
    let workers = Workers::spawn(workers.max(1), &socket, &handle.forward_latency)?;
    let (signals_tx, signals) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(handle.clone(), socket, workers, signals_tx));
    Ok(Running {
        handle,
        signals,
        task,
    })
}

/// Asks for [`SOCKET_BUFFER`] bytes of receive and send buffer (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`). While the loop fans one packet out to thousands,
/// subscribers' feedback keeps arriving: with the default 208 KiB the SFU's own receive
/// queue overflowed at 2,000 subscribers and dropped publishers' packets with it.
fn enlarge_buffers(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    for result in [
        setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER),
        setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER),
    ] {
        if let Err(err) = result {
            tracing::debug!(%err, "a socket buffer size was refused");
        }
    }
}

/// Sends every datagram of `outbox` with `sendmmsg`, in as few calls as the socket
/// takes, waiting (`poll`) while the socket's send buffer is full. A datagram the kernel
/// refuses (an unreachable address) is dropped, as on the wire. (nix's message headers
/// hold raw pointers, so they are set up per call.)
fn send_batch(socket: &std::net::UdpSocket, outbox: &Outbox) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let (buffers, addresses) = outbox.parts();
    let mut at = 0;
    while at < buffers.len() {
        let slices: Vec<[std::io::IoSlice<'_>; 1]> = buffers[at..]
            .iter()
            .map(|b| [std::io::IoSlice::new(b)])
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = addresses[at..]
            .iter()
            .map(|a| Some(SockaddrStorage::from(*a)))
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter(),
            &addrs,
            [],
            MsgFlags::empty(),
        )
        .map(|results| results.count());
        match sent {
            Ok(0) => at += 1,
            Ok(n) => at += n,
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
                if poll(&mut fds, PollTimeout::from(100u8)).is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            // The first datagram failed (say, no route): skip it, send the rest.
            Err(_) => at += 1,
        }
    }
}

/// Sends the outboxes holding datagrams (the core fills them in turn, so they come
/// first) and empties them; if any were sent, observes the time since `arrived`.
fn send_filled(
    socket: &std::net::UdpSocket,
    outboxes: &mut [Outbox],
    arrived: Option<Instant>,
    latency: &Histogram,
) {
    let mut any = false;
    for outbox in outboxes.iter_mut().take_while(|o| !o.is_empty()) {
        any = true;
        send_batch(socket, outbox);
        outbox.clear();
    }
    if let Some(at) = arrived
        && any
    {
        latency.observe(at.elapsed().as_secs_f64());
    }
}

/// One lane's filled outboxes on their way to its worker and back (emptied), and when the
/// datagram that filled them arrived.
struct Batch {
    lane: usize,
    outboxes: Vec<Outbox>,
    arrived: Option<Instant>,
}

/// A send worker's thread: sends each batch of its lane in order, then hands the
/// outboxes back. Observes the forward latency once per batch that caused sending: with
/// several workers, a datagram's copies are measured once per worker that sent some. Ends
/// when the driver is gone.
fn send_worker(
    socket: std::net::UdpSocket,
    mut batches: mpsc::UnboundedReceiver<Batch>,
    sent: mpsc::UnboundedSender<Batch>,
    latency: Histogram,
) {
    while let Some(mut batch) = batches.blocking_recv() {
        send_filled(&socket, &mut batch.outboxes, batch.arrived, &latency);
        if sent.send(batch).is_err() {
            return;
        }
    }
}

/// The driver's side of the send workers: a channel to each, the outboxes they handed
/// back, and how many are out.
struct Workers {
    to: Vec<mpsc::UnboundedSender<Batch>>,
    back: mpsc::UnboundedReceiver<Batch>,
    /// Each lane's emptied outboxes, for the core to fill next.
    spare: Vec<Vec<Outbox>>,
    /// Emptied batch vectors, reused to carry the next batches (no allocation once warm).
    carriers: Vec<Vec<Outbox>>,
    /// Outboxes with datagrams at the workers.
    in_flight: usize,
    /// With one worker: no thread; the driver sends the one lane itself, after letting go
    /// of the core (a thread would only take turns with the driver on the same core), and
    /// when the datagram that filled it arrived.
    inline: Option<(std::net::UdpSocket, Histogram)>,
    inline_arrived: Option<Instant>,
}

impl Workers {
    /// Starts `count` worker threads (`sfu-send-N`), each on its own handle of `socket`;
    /// none for one worker.
    fn spawn(count: usize, socket: &UdpSocket, latency: &Histogram) -> std::io::Result<Workers> {
        let (sent, back) = mpsc::unbounded_channel();
        let mut to = Vec::with_capacity(count);
        let inline = if count <= 1 {
            let handle = std::net::UdpSocket::from(socket.as_fd().try_clone_to_owned()?);
            Some((handle, latency.clone()))
        } else {
            None
        };
        for lane in (0..count).filter(|_| inline.is_none()) {
            let (tx, rx) = mpsc::unbounded_channel();
            let handle = std::net::UdpSocket::from(socket.as_fd().try_clone_to_owned()?);
            let (sent, latency) = (sent.clone(), latency.clone());
            std::thread::Builder::new()
                .name(format!("sfu-send-{lane}"))
                .spawn(move || send_worker(handle, rx, sent, latency))?;
            to.push(tx);
        }
        Ok(Workers {
            to,
            back,
            spare: (0..count).map(|_| Vec::new()).collect(),
            carriers: Vec::new(),
            in_flight: 0,
            inline,
            inline_arrived: None,
        })
    }

    /// Takes back an emptied batch.
    fn reclaim(&mut self, mut batch: Batch) {
        self.in_flight = self.in_flight.saturating_sub(batch.outboxes.len());
        if let Some(spare) = self.spare.get_mut(batch.lane) {
            spare.append(&mut batch.outboxes);
        }
        self.carriers.push(batch.outboxes);
    }

    /// Trades each lane's filled outboxes in the core for spare ones and hands those with
    /// datagrams to the lane's worker (the empty ones stay spare: a lane's pool grows only
    /// to what is really out at once).
    fn dispatch(&mut self, sfu: &mut Sfu, arrived: Option<Instant>) {
        if self.inline.is_some() {
            // Kept for `send_inline`, once the core is let go.
            if let Some(spare) = self.spare.first_mut() {
                sfu.swap_media(0, spare);
                self.inline_arrived = arrived;
            }
            return;
        }
        for (lane, spare) in self.spare.iter_mut().enumerate() {
            sfu.swap_media(lane, spare);
            // The core fills its outboxes in turn: those with datagrams come first.
            let filled = spare.iter().take_while(|o| !o.is_empty()).count();
            if filled == 0 {
                continue;
            }
            let mut outboxes = self.carriers.pop().unwrap_or_default();
            outboxes.extend(spare.drain(..filled));
            self.in_flight += outboxes.len();
            let batch = Batch {
                lane,
                outboxes,
                arrived,
            };
            if let Err(mpsc::error::SendError(mut batch)) = self.to[lane].send(batch) {
                // The worker is gone (shutting down): what it would have sent is lost.
                self.in_flight -= batch.outboxes.len();
                for outbox in &mut batch.outboxes {
                    outbox.clear();
                }
                spare.append(&mut batch.outboxes);
            }
        }
    }

    /// With one worker: sends what [`Workers::dispatch`] took from the core.
    fn send_inline(&mut self) {
        let (Some((socket, latency)), Some(spare)) = (&self.inline, self.spare.first_mut()) else {
            return;
        };
        send_filled(socket, spare, self.inline_arrived.take(), latency);
    }

    fn saturated(&self) -> bool {
        self.in_flight > IN_FLIGHT_PER_WORKER * self.to.len()
    }
}

async fn run(
    handle: SfuHandle,
    socket: UdpSocket,
    mut workers: Workers,
    signals: mpsc::UnboundedSender<SignalOut>,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    // When the datagram whose consequences are being sent arrived.
    let mut arrived: Option<Instant> = None;
    loop {
        while let Ok(batch) = workers.back.try_recv() {
            workers.reclaim(batch);
        }
        let (control, deadline) = {
            let mut sfu = handle.lock();
            let mut control = Vec::new();
            while let Some(transmit) = sfu.poll_control() {
                control.push(transmit);
            }
            workers.dispatch(&mut sfu, arrived.take());
            while let Some(signal) = sfu.poll_signal() {
                let _ = signals.send(signal);
            }
            (control, sfu.poll_timeout())
        };
        for transmit in control {
            // A failed send is a lost datagram, as on the wire; the protocols recover.
            let _ = socket.send_to(&transmit.payload, transmit.to).await;
        }
        workers.send_inline();
        // Too much waiting to be sent: let the workers catch up before reading more.
        while workers.saturated() {
            match workers.back.recv().await {
                Some(batch) => workers.reclaim(batch),
                None => return,
            }
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + IDLE_TICK);
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let now = Instant::now();
                    arrived = Some(now);
                    let mut sfu = handle.lock();
                    sfu.handle_datagram(now, from, &buf[..n]);
                    // What is already waiting, under the same lock, so its copies go out in
                    // the same batches (a few: the copies wait in memory until sent).
                    for _ in 0..READ_AHEAD {
                        if sfu.queued_outboxes() >= READ_AHEAD_OUTBOXES {
                            break;
                        }
                        let Ok((n, from)) = socket.try_recv_from(&mut buf) else {
                            break;
                        };
                        sfu.handle_datagram(Instant::now(), from, &buf[..n]);
                    }
                }
                Err(err) => tracing::debug!(%err, "UDP receive"),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                handle.lock().handle_timeout(Instant::now());
            }
            _ = handle.wake.notified() => {}
            Some(batch) = workers.back.recv() => workers.reclaim(batch),
        }
    }
}
