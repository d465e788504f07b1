//! The cost, per packet, of sending one RTP packet on an already connected send stream:
//! from "the SFU hands the stack a packet" to "the encrypted datagram is out of the
//! stack", for the two sans-IO WebRTC stacks Sotto could put under its SFU legs.
//!
//! - `rtc`: `sotto_sfu::leg::Leg` as the SFU uses it (ICE-lite, its interceptors: NACK,
//!   reports, TWCC, GCC, our RTX ones), connected in memory to a `sotto_sfu::client::Client`.
//!   One iteration is `Leg::write_rtp`, then `poll_transmit` until empty.
//! - `str0m`: two `str0m::Rtc`s connected in memory, the SFU side ICE-lite in RTP mode,
//!   with its default NACK, TWCC and report machinery. One iteration is
//!   `direct_api().stream_tx(..).write_rtp(..)`, `Input::Timeout(now)`, then `poll_output`
//!   until it says `Output::Timeout`. `str0m_bwe` is the same with str0m's send-side
//!   estimate on (our legs run GCC).
//!
//! Each on one pair (its state hot in the caches), and for Opus also on 500 pairs served
//! in turn, as the SFU fans one publisher out to 500 subscribers.
//!
//! Both run on an injected clock that moves one packet interval per packet (20 ms for
//! Opus, 10 ms for 1,200-byte VP8 packets), and each iteration first runs the SFU side's
//! due timers, so report and timer work is counted in proportion. Only the SFU side's send
//! path is timed. Between iterations, untimed, the participant runs its timers and trades
//! STUN (and DTLS) with the SFU side, so that ICE consent holds for hours of simulated
//! time; it gets none of the media, and its RTCP feedback is dropped, the same for both
//! stacks. Every iteration must put exactly one SRTP datagram of that stream on the wire,
//! or the bench panics.
//!
//! `cargo bench -p sotto-bench --bench forward_path`; results in sfu/README.md.

mod rtc_path;
mod str0m_path;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sotto_sfu::leg::Codec;

const SFU_ADDR: &str = "10.0.0.1:5000";
const CLIENT_ADDR: &str = "10.0.0.2:40000";
const AUDIO_PAYLOAD: usize = 80;
const VIDEO_PAYLOAD: usize = 1_200;
/// How long, in simulated time, a pair may take to connect.
const SETUP_LIMIT: Duration = Duration::from_secs(10);

/// What a stack put on the wire, by kind of datagram.
#[derive(Debug, Default, Clone, Copy)]
struct Wire {
    /// SRTP datagrams (the forwarded stream).
    media: u64,
    /// Their bytes.
    media_bytes: u64,
    /// SRTCP datagrams (sender reports and the like).
    rtcp: u64,
    /// STUN and DTLS datagrams.
    control: u64,
    /// The participant's SRTCP datagrams the network dropped.
    feedback_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datagram {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

/// RFC 7983's demultiplexing by first byte, and RFC 5761's RTP/RTCP split.
fn classify(datagram: &[u8]) -> Datagram {
    match (datagram.first(), datagram.get(1)) {
        (Some(0..=3), _) => Datagram::Stun,
        (Some(20..=63), _) => Datagram::Dtls,
        (Some(128..=191), Some(200..=207)) => Datagram::Rtcp,
        (Some(128..=191), Some(_)) => Datagram::Rtp,
        _ => Datagram::Other,
    }
}

impl Wire {
    fn add(mut self, other: Wire) -> Wire {
        self.media += other.media;
        self.media_bytes += other.media_bytes;
        self.rtcp += other.rtcp;
        self.control += other.control;
        self.feedback_dropped += other.feedback_dropped;
        self
    }

    /// Counts one datagram from the SFU side; true when the participant should get it.
    fn count(&mut self, datagram: &[u8]) -> bool {
        match classify(datagram) {
            Datagram::Rtp => {
                self.media += 1;
                self.media_bytes += datagram.len() as u64;
                false
            }
            Datagram::Rtcp => {
                self.rtcp += 1;
                false
            }
            Datagram::Stun | Datagram::Dtls => {
                self.control += 1;
                true
            }
            Datagram::Other => false,
        }
    }
}

/// The stream one bench sends.
#[derive(Debug, Clone, Copy)]
struct Stream {
    codec: Codec,
    /// Simulated time between two packets.
    interval: Duration,
    /// RTP timestamp units between two packets.
    ticks: u32,
    payload: usize,
}

const OPUS: Stream = Stream {
    codec: Codec::Opus,
    interval: Duration::from_millis(20),
    ticks: 960,
    payload: AUDIO_PAYLOAD,
};

/// About 1 Mbit/s of 1,200-byte packets.
const VP8: Stream = Stream {
    codec: Codec::Vp8,
    interval: Duration::from_millis(10),
    ticks: 900,
    payload: VIDEO_PAYLOAD,
};

impl Stream {
    fn name(&self) -> String {
        match self.codec {
            Codec::Opus => format!("opus_{}B", self.payload),
            _ => format!("vp8_{}B", self.payload),
        }
    }

    fn is_video(&self) -> bool {
        self.codec != Codec::Opus
    }

    /// A payload that looks like the codec's (an Opus TOC byte, a VP8 descriptor).
    fn payload_bytes(&self) -> Vec<u8> {
        let mut payload: Vec<u8> = (0..self.payload).map(|i| (i * 7) as u8).collect();
        payload[0] = if self.is_video() { 0x90 } else { 0x78 };
        payload
    }
}

/// One connected pair: the SFU side (timed) and the participant (untimed).
trait Path {
    /// Runs the SFU side's due timers and datagrams from the participant, hands it the
    /// next packet, and drains what it sends.
    fn forward(&mut self);
    /// Whether the participant has work: datagrams for it, or a timer due.
    fn client_due(&self) -> bool;
    /// Lets the participant do that work.
    fn run_client(&mut self);
    /// What the SFU side sent so far.
    fn wire(&self) -> Wire;
}

/// `n` pairs served in turn, one packet each, as the SFU fans one publisher's packet out to
/// `n` subscribers' legs: each pair's state is touched once every `n` packets, so it is
/// as cold in the caches as in the SFU, where a single pair stays hot.
struct Fanout<P> {
    paths: Vec<P>,
    next: usize,
    last: usize,
}

impl<P: Path> Fanout<P> {
    fn new(n: usize, stream: Stream, new: fn(Stream) -> P) -> Fanout<P> {
        Fanout {
            paths: (0..n).map(|_| new(stream)).collect(),
            next: 0,
            last: 0,
        }
    }
}

impl<P: Path> Path for Fanout<P> {
    fn forward(&mut self) {
        self.last = self.next;
        self.paths[self.last].forward();
        self.next = (self.next + 1) % self.paths.len();
    }

    fn client_due(&self) -> bool {
        self.paths[self.last].client_due()
    }

    fn run_client(&mut self) {
        self.paths[self.last].run_client();
    }

    fn wire(&self) -> Wire {
        self.paths
            .iter()
            .fold(Wire::default(), |sum, path| sum.add(path.wire()))
    }
}

/// Forwards `iters` packets and returns the time the SFU side took.
fn measure(path: &mut impl Path, iters: u64) -> Duration {
    let before = path.wire();
    let mut elapsed = Duration::ZERO;
    let mut started = Instant::now();
    for _ in 0..iters {
        path.forward();
        if path.client_due() {
            elapsed += started.elapsed();
            path.run_client();
            started = Instant::now();
        }
    }
    elapsed += started.elapsed();
    let after = path.wire();
    assert_eq!(
        after.media - before.media,
        iters,
        "each packet written must leave the stack as one SRTP datagram"
    );
    elapsed
}

fn report(name: &str, wire: Wire) {
    let average = wire.media_bytes.checked_div(wire.media).unwrap_or(0);
    eprintln!(
        "{name}: {} SRTP datagrams out ({average} bytes each on average), {} SRTCP, \
         {} STUN/DTLS; {} participant RTCP datagrams dropped",
        wire.media, wire.rtcp, wire.control, wire.feedback_dropped
    );
}

/// Subscribers in the fan-out benches: the load bench's 1 × 500.
const FANOUT: usize = 500;

use rtc_path::RtcPath;
use str0m_path::Str0mPath;

fn bench_path(c: &mut Criterion, name: &str, stack: &str, mut path: impl Path) {
    let mut group = c.benchmark_group(format!("forward_path/{name}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function(stack, |b| b.iter_custom(|iters| measure(&mut path, iters)));
    group.finish();
    report(&format!("{stack} {name}"), path.wire());
}

fn forward_path(c: &mut Criterion) {
    for stream in [OPUS, VP8] {
        bench_path(c, &stream.name(), "rtc", RtcPath::new(stream));
        bench_path(c, &stream.name(), "str0m", Str0mPath::new(stream));
        bench_path(c, &stream.name(), "str0m_bwe", Str0mPath::with_bwe(stream));
    }
    let group = format!("{}_fanout{FANOUT}", OPUS.name());
    bench_path(c, &group, "rtc", Fanout::new(FANOUT, OPUS, RtcPath::new));
    bench_path(
        c,
        &group,
        "str0m",
        Fanout::new(FANOUT, OPUS, Str0mPath::new),
    );
    bench_path(
        c,
        &group,
        "str0m_bwe",
        Fanout::new(FANOUT, OPUS, Str0mPath::with_bwe),
    );
}

criterion_group!(benches, forward_path);
criterion_main!(benches);
