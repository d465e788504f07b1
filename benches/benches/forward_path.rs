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

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sotto_sfu::client::{Client, Publish};
use sotto_sfu::leg::{Codec, Leg, LegOutput, SendTrack};
use str0m::media::{Direction, MediaKind, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};

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

// ---------------------------------------------------------------------------------------
// rtc, as the SFU uses it
// ---------------------------------------------------------------------------------------

/// A `Leg` with one send track, connected to a `Client`.
struct RtcPath {
    leg: Leg,
    client: Client,
    track: SendTrack,
    audio_level_id: Option<u8>,
    stream: Stream,
    payload: Bytes,
    now: Instant,
    seq: u16,
    timestamp: u32,
    to_client: Vec<bytes::BytesMut>,
    client_next: Option<Instant>,
    wire: Wire,
}

/// The id of `uri` in an SDP's `a=extmap` lines.
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let (id, rest) = line.trim().strip_prefix("a=extmap:")?.split_once(' ')?;
        (rest.split_whitespace().next()? == uri)
            .then(|| id.split('/').next()?.parse().ok())
            .flatten()
    })
}

impl RtcPath {
    fn new(stream: Stream) -> RtcPath {
        let sfu_addr: SocketAddr = SFU_ADDR.parse().expect("SFU address");
        let client_addr: SocketAddr = CLIENT_ADDR.parse().expect("client address");
        let mut now = Instant::now();
        let mut leg = Leg::new(sfu_addr, now).expect("leg");
        // A participant that publishes audio, like the load bench's.
        let mut client =
            Client::new("p", client_addr, &[Publish::audio(0x5000)], now).expect("client");
        let offer = client.offer(now).expect("client offer");
        let answer = leg.accept_offer(&offer, now).expect("leg answer");
        client
            .apply_answer(&answer, now)
            .expect("client applies answer");

        let start = now;
        let (mut leg_up, mut client_up) = (false, false);
        while !(leg_up && client_up) {
            assert!(now - start < SETUP_LIMIT, "rtc: no connection");
            rtc_exchange(&mut leg, &mut client, now);
            while let Some(output) = leg.poll_output() {
                leg_up |= matches!(output, LegOutput::Connected);
            }
            while let Some(event) = client.poll_event() {
                client_up |= matches!(event, sotto_sfu::client::ClientEvent::Connected);
            }
            now = rtc_step(&mut leg, &mut client, now);
        }

        // The forwarded stream: an SFU offer, the participant's answer.
        let track = leg
            .add_send_track_with_codec(stream.codec, "publisher", "publisher-0", 0xF000)
            .expect("send track");
        let offer = leg.create_offer(now).expect("SFU offer");
        let answer = client.accept_offer(&offer, now).expect("client answer");
        leg.accept_answer(&answer, now).expect("SFU applies answer");
        rtc_exchange(&mut leg, &mut client, now);
        while leg.poll_output().is_some() {}
        while client.poll_event().is_some() {}
        let audio_level_id = (stream.codec == Codec::Opus)
            .then(|| extmap_id(&offer, rtc::sdp::extmap::AUDIO_LEVEL_URI))
            .flatten();
        let client_next = client.poll_timeout();
        RtcPath {
            leg,
            client,
            track,
            audio_level_id,
            stream,
            payload: Bytes::from(stream.payload_bytes()),
            now,
            seq: 0,
            timestamp: 0,
            to_client: Vec::new(),
            client_next,
            wire: Wire::default(),
        }
    }

    fn packet(&self) -> rtc::rtp::Packet {
        let mut packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                marker: self.stream.is_video() && self.seq % 3 == 2,
                ..Default::default()
            },
            payload: self.payload.clone(),
        };
        // As the SFU core forwards Opus: the audio level, under the subscriber's id.
        if let Some(id) = self.audio_level_id {
            packet.header.extension = true;
            packet.header.extension_profile = 0xBEDE;
            packet
                .header
                .set_extension(id, Bytes::from_static(&[0x80 | 30]))
                .expect("audio level extension");
        }
        packet
    }
}

/// Moves datagrams both ways until neither side has any (setup only).
fn rtc_exchange(leg: &mut Leg, client: &mut Client, now: Instant) {
    loop {
        let mut moved = false;
        while let Some(transmit) = client.poll_transmit() {
            moved = true;
            let _ = leg.handle_datagram(now, client.addr(), &transmit.payload);
        }
        while let Some(transmit) = leg.poll_transmit() {
            moved = true;
            let _ = client.handle_datagram(now, leg.local_addr(), &transmit.payload);
        }
        if !moved {
            return;
        }
    }
}

/// Advances the setup clock by at most 10 ms, or to the next deadline, and runs timers.
fn rtc_step(leg: &mut Leg, client: &mut Client, now: Instant) -> Instant {
    let step = now + Duration::from_millis(10);
    let next = [leg.poll_timeout(), client.poll_timeout()]
        .into_iter()
        .flatten()
        .min()
        .map_or(step, |due| due.clamp(now, step));
    if leg.poll_timeout().is_some_and(|due| due <= next) {
        leg.handle_timeout(next).expect("leg timers");
    }
    if client.poll_timeout().is_some_and(|due| due <= next) {
        client.handle_timeout(next).expect("client timers");
    }
    next
}

impl Path for RtcPath {
    fn forward(&mut self) {
        self.now += self.stream.interval;
        let now = self.now;
        if self.leg.poll_timeout().is_some_and(|due| due <= now) {
            self.leg.handle_timeout(now).expect("leg timers");
            while self.leg.poll_output().is_some() {}
        }
        let packet = self.packet();
        self.leg
            .write_rtp(self.track, black_box(packet), now)
            .expect("write_rtp");
        while let Some(transmit) = self.leg.poll_transmit() {
            if self.wire.count(&transmit.payload) {
                self.to_client.push(transmit.payload);
            }
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.stream.ticks);
    }

    fn client_due(&self) -> bool {
        !self.to_client.is_empty() || self.client_next.is_some_and(|due| due <= self.now)
    }

    fn run_client(&mut self) {
        let now = self.now;
        let (sfu_addr, client_addr) = (self.leg.local_addr(), self.client.addr());
        if self.client.poll_timeout().is_some_and(|due| due <= now) {
            self.client.handle_timeout(now).expect("client timers");
        }
        loop {
            let mut moved = false;
            for datagram in self.to_client.drain(..) {
                let _ = self.client.handle_datagram(now, sfu_addr, &datagram);
            }
            while let Some(transmit) = self.client.poll_transmit() {
                match classify(&transmit.payload) {
                    Datagram::Stun | Datagram::Dtls => {
                        let _ = self
                            .leg
                            .handle_datagram(now, client_addr, &transmit.payload);
                        moved = true;
                    }
                    _ => self.wire.feedback_dropped += 1,
                }
            }
            while self.leg.poll_output().is_some() {}
            while let Some(transmit) = self.leg.poll_transmit() {
                if self.wire.count(&transmit.payload) {
                    self.to_client.push(transmit.payload);
                }
            }
            if !moved {
                break;
            }
        }
        while self.client.poll_event().is_some() {}
        self.client_next = self.client.poll_timeout();
    }

    fn wire(&self) -> Wire {
        self.wire
    }
}

// ---------------------------------------------------------------------------------------
// str0m
// ---------------------------------------------------------------------------------------

/// Two `Rtc`s: the SFU side (ICE-lite, RTP mode) with one send stream, and a client.
struct Str0mPath {
    sfu: Rtc,
    client: Rtc,
    sfu_addr: SocketAddr,
    client_addr: SocketAddr,
    ssrc: Ssrc,
    pt: Pt,
    stream: Stream,
    payload: Arc<[u8]>,
    now: Instant,
    seq: u64,
    timestamp: u32,
    to_client: Vec<Vec<u8>>,
    client_next: Instant,
    wire: Wire,
}

/// Feeds `datagram` to `rtc`.
fn str0m_receive(rtc: &mut Rtc, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
    if let Ok(receive) = Receive::new(Protocol::Udp, from, to, datagram) {
        let _ = rtc.handle_input(Input::Receive(now, receive));
    }
}

/// Drains `rtc` until it asks for a timeout: returns it, and passes every datagram to
/// `sink`.
fn str0m_drain(rtc: &mut Rtc, mut sink: impl FnMut(&[u8])) -> Instant {
    loop {
        match rtc.poll_output().expect("str0m poll_output") {
            Output::Timeout(at) => return at,
            Output::Transmit(transmit) => sink(&transmit.contents),
            Output::Event(_) => {}
        }
    }
}

impl Str0mPath {
    /// With str0m's defaults: no bandwidth estimation, so no pacer.
    fn new(stream: Stream) -> Str0mPath {
        Str0mPath::with_config(stream, RtcConfig::new())
    }

    /// With its send-side estimate on (TWCC history, delay- and loss-based control, and
    /// the pacer that comes with it), starting at 2 Mbit/s like a Sotto leg's GCC.
    fn with_bwe(stream: Stream) -> Str0mPath {
        Str0mPath::with_config(
            stream,
            RtcConfig::new().enable_bwe(Some(str0m::bwe::Bitrate::mbps(2))),
        )
    }

    fn with_config(stream: Stream, config: RtcConfig) -> Str0mPath {
        let sfu_addr: SocketAddr = SFU_ADDR.parse().expect("SFU address");
        let client_addr: SocketAddr = CLIENT_ADDR.parse().expect("client address");
        let mut now = Instant::now();
        let mut sfu = config.set_ice_lite(true).set_rtp_mode(true).build(now);
        let mut client = RtcConfig::new().build(now);
        sfu.add_local_candidate(Candidate::host(sfu_addr, "udp").expect("SFU candidate"));
        client.add_local_candidate(Candidate::host(client_addr, "udp").expect("client candidate"));

        // The participant offers the audio it publishes; the SFU side answers.
        let mut change = client.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().expect("client offer");
        let answer = sfu.sdp_api().accept_offer(offer).expect("SFU answer");
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("client applies answer");

        let start = now;
        let (mut to_sfu, mut to_client) = (Vec::<Vec<u8>>::new(), Vec::<Vec<u8>>::new());
        let mut sfu_next = now;
        let mut client_next = now;
        while !(sfu.is_connected() && client.is_connected()) {
            assert!(now - start < SETUP_LIMIT, "str0m: no connection");
            for datagram in to_sfu.drain(..) {
                str0m_receive(&mut sfu, now, client_addr, sfu_addr, &datagram);
            }
            for datagram in to_client.drain(..) {
                str0m_receive(&mut client, now, sfu_addr, client_addr, &datagram);
            }
            if sfu_next <= now {
                let _ = sfu.handle_input(Input::Timeout(now));
            }
            if client_next <= now {
                let _ = client.handle_input(Input::Timeout(now));
            }
            sfu_next = str0m_drain(&mut sfu, |d| to_client.push(d.to_vec()));
            client_next = str0m_drain(&mut client, |d| to_sfu.push(d.to_vec()));
            if to_sfu.is_empty() && to_client.is_empty() {
                now = sfu_next
                    .min(client_next)
                    .clamp(now, now + Duration::from_millis(10));
            }
        }

        // The forwarded stream: an SFU offer, the participant's answer.
        let kind = if stream.is_video() {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let mut change = sfu.sdp_api();
        let mid = change.add_media(
            kind,
            Direction::SendOnly,
            Some("publisher".into()),
            Some("publisher-0".into()),
            None,
        );
        let (offer, pending) = change.apply().expect("SFU offer");
        let answer = client.sdp_api().accept_offer(offer).expect("client answer");
        sfu.sdp_api()
            .accept_answer(pending, answer)
            .expect("SFU applies answer");
        let ssrc = sfu
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .expect("a send stream for the new m-line")
            .ssrc();
        let codec = if stream.is_video() {
            str0m::format::Codec::Vp8
        } else {
            str0m::format::Codec::Opus
        };
        let pt = sfu
            .codec_config()
            .find(|params| params.spec().codec == codec)
            .expect("codec configured")
            .pt();
        let _ = sfu.handle_input(Input::Timeout(now));
        let _ = client.handle_input(Input::Timeout(now));
        let mut path = Str0mPath {
            sfu,
            client,
            sfu_addr,
            client_addr,
            ssrc,
            pt,
            stream,
            payload: Arc::from(stream.payload_bytes()),
            now,
            seq: 0,
            timestamp: 0,
            to_client: Vec::new(),
            client_next: now,
            wire: Wire::default(),
        };
        let mut sfu_out = Vec::new();
        str0m_drain(&mut path.sfu, |d| sfu_out.push(d.to_vec()));
        path.to_client = sfu_out;
        path.run_client();
        path
    }
}

impl Path for Str0mPath {
    fn forward(&mut self) {
        self.now += self.stream.interval;
        let now = self.now;
        let video = self.stream.is_video();
        let ext_vals = if video {
            ExtensionValues::default()
        } else {
            ExtensionValues {
                audio_level: Some(-30),
                voice_activity: Some(true),
                ..Default::default()
            }
        };
        let write = RtpWrite::new(
            self.pt,
            self.seq.into(),
            self.timestamp,
            now,
            self.payload.clone(),
        )
        .marker(video && self.seq % 3 == 2)
        .nackable(video)
        .ext_vals(ext_vals);
        self.sfu
            .direct_api()
            .stream_tx(&self.ssrc)
            .expect("send stream")
            .write_rtp(black_box(write));
        // Time moves only through input: this stamps the packet and runs due timers.
        self.sfu
            .handle_input(Input::Timeout(now))
            .expect("str0m timeout");
        let (wire, to_client) = (&mut self.wire, &mut self.to_client);
        str0m_drain(&mut self.sfu, |datagram| {
            if wire.count(datagram) {
                to_client.push(datagram.to_vec());
            }
        });
        self.seq += 1;
        self.timestamp = self.timestamp.wrapping_add(self.stream.ticks);
    }

    fn client_due(&self) -> bool {
        !self.to_client.is_empty() || self.client_next <= self.now
    }

    fn run_client(&mut self) {
        let now = self.now;
        let _ = self.client.handle_input(Input::Timeout(now));
        loop {
            for datagram in std::mem::take(&mut self.to_client) {
                str0m_receive(
                    &mut self.client,
                    now,
                    self.sfu_addr,
                    self.client_addr,
                    &datagram,
                );
            }
            let mut to_sfu = Vec::new();
            let wire = &mut self.wire;
            self.client_next = str0m_drain(&mut self.client, |datagram| match classify(datagram) {
                Datagram::Stun | Datagram::Dtls => to_sfu.push(datagram.to_vec()),
                _ => wire.feedback_dropped += 1,
            });
            if to_sfu.is_empty() {
                break;
            }
            for datagram in to_sfu {
                str0m_receive(
                    &mut self.sfu,
                    now,
                    self.client_addr,
                    self.sfu_addr,
                    &datagram,
                );
            }
            let (wire, to_client) = (&mut self.wire, &mut self.to_client);
            str0m_drain(&mut self.sfu, |datagram| {
                if wire.count(datagram) {
                    to_client.push(datagram.to_vec());
                }
            });
        }
    }

    fn wire(&self) -> Wire {
        self.wire
    }
}

// ---------------------------------------------------------------------------------------

/// Subscribers in the fan-out benches: the load bench's 1 × 500.
const FANOUT: usize = 500;

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
