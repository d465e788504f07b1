//! A deterministic world for the SFU core: the sans-IO [`Sfu`], sans-IO [`Client`]s with
//! real DTLS-SRTP, and a network between them made of `sotto-netsim` links (the model the
//! call-quality bench's relay runs): a one-way delay, seeded uniform loss of SRTP and SRTCP
//! datagrams, and optionally a participant's downlink capped to a bit rate behind a
//! drop-tail queue. Time is injected: a run of ten simulated seconds takes well under one
//! real second. Each direction between two addresses is its own link, seeded from the seed
//! and the two addresses, so whether the n-th media datagram on a link is lost depends on
//! the seed alone (SSRCs and keys are random per run; they change no decision, though RTCP
//! timing can shift which datagram is the n-th).
//!
//! Media: audio is one 120-byte packet every 20 ms; video is 30 frames a second, each of
//! one, two or six 1,000-byte packets (simulcast layers q, h, f; a single-layer stream
//! sends three), keyframes on request. Every payload starts with the layer's quality and a
//! keyframe flag, so a test can tell what it received; the SFU never reads payloads.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp_transceiver::SSRC;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sotto_netsim::{Bandwidth, ChangeKind, Fate, Impairment, Link, Loss};
use sotto_sfu::client::{Client, ClientEvent, FrameInfo, Outgoing, Publish};
use sotto_sfu::core::{Sfu, SignalOut};
use sotto_sfu::leg::Codec;

pub const ROOM: &str = "room-1";
const SFU_ADDR: &str = "10.0.0.1:5000";
/// The longest step of the simulated clock.
const MAX_STEP: Duration = Duration::from_millis(5);
/// A capped link drops what would wait longer than this in its queue, ms.
const MAX_QUEUE_MS: f64 = 250.0;
/// IPv4 and UDP headers: what a datagram costs on a capped link besides its payload.
const IP_UDP_BYTES: usize = 28;

/// One layer of a source (the only one, without simulcast).
struct Layer {
    ssrc: SSRC,
    quality: u8,
    packets_per_frame: usize,
    seq: u16,
    keyframe_due: bool,
    /// When each sequence number was sent.
    sent: Vec<(u16, Instant)>,
}

/// A stream a participant sends on a schedule.
struct Source {
    codec: Codec,
    layers: Vec<Layer>,
    interval: Duration,
    next: Option<Instant>,
    frame: u16,
}

impl Source {
    fn new(publish: &Publish) -> Source {
        let video = publish.codec != Codec::Opus;
        let packets: &[usize] = match (video, publish.simulcast) {
            (false, _) => &[1],
            (true, false) => &[3],
            (true, true) => &[1, 2, 6],
        };
        let layers = publish
            .layer_ssrcs()
            .into_iter()
            .zip(packets)
            .enumerate()
            .map(|(quality, (ssrc, packets_per_frame))| Layer {
                ssrc,
                quality: if publish.simulcast { quality as u8 } else { 0 },
                packets_per_frame: *packets_per_frame,
                seq: 0,
                keyframe_due: true,
                sent: Vec::new(),
            })
            .collect();
        Source {
            codec: publish.codec,
            layers,
            interval: if video {
                Duration::from_micros(33_333)
            } else {
                Duration::from_millis(20)
            },
            next: None,
            frame: 0,
        }
    }
}

/// A received RTP packet, as the participant saw it.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub at: Instant,
    pub ssrc: SSRC,
    pub seq: u16,
    pub timestamp: u32,
    /// The quality of the layer it was sent on (from its payload).
    pub quality: u8,
    /// It belongs to a keyframe (from its payload).
    pub keyframe: bool,
}

/// One participant.
pub struct Participant {
    pub name: String,
    pub client: Client,
    pub connected: bool,
    /// Left the room: datagrams to it are dropped.
    pub gone: bool,
    sources: Vec<Source>,
    /// Forwarded streams: SSRC → publisher (the msid stream id) and kind.
    pub tracks: HashMap<SSRC, (String, RtpCodecKind)>,
    /// Forwarded streams' track ids (msid), by SSRC.
    pub track_ids: HashMap<SSRC, String>,
    /// Every RTP packet received.
    pub rtp: Vec<Received>,
    /// Keyframe requests (PLIs) received about the participant's own streams: when, and
    /// for which SSRC.
    pub plis: Vec<(Instant, SSRC)>,
}

impl Participant {
    /// The sequence numbers of `ssrc` the participant sent in `[from, to)`.
    pub fn sent_between(&self, ssrc: SSRC, from: Instant, to: Instant) -> Vec<u16> {
        self.sources
            .iter()
            .flat_map(|s| s.layers.iter())
            .filter(|layer| layer.ssrc == ssrc)
            .flat_map(|layer| layer.sent.iter())
            .filter(|(_, at)| (from..to).contains(at))
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// The SSRC on which the participant receives `publisher`'s stream of `kind`.
    pub fn receiving(&self, publisher: &str, kind: RtpCodecKind) -> Option<SSRC> {
        self.tracks
            .iter()
            .find(|(_, (p, k))| p == publisher && *k == kind)
            .map(|(ssrc, _)| *ssrc)
    }

    /// Everything received on `ssrc`, in arrival order.
    pub fn received_on(&self, ssrc: SSRC) -> Vec<Received> {
        self.rtp
            .iter()
            .filter(|r| r.ssrc == ssrc)
            .copied()
            .collect()
    }

    /// Distinct sequence numbers received on `ssrc`, and when the last packet came.
    pub fn received(&self, ssrc: SSRC) -> (std::collections::BTreeSet<u16>, Option<Instant>) {
        let packets = self.received_on(ssrc);
        let last = packets.iter().map(|r| r.at).max();
        (packets.iter().map(|r| r.seq).collect(), last)
    }
}

/// One direction between two addresses. Media (SRTP and SRTCP) crosses the impairments;
/// the rest (STUN, DTLS) only the delay, on a link of its own, so setup is never what a
/// test's seed decides.
struct Path {
    media: Link<Vec<u8>>,
    control: Link<Vec<u8>>,
}

/// The world.
pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    pub sfu: Sfu,
    sfu_addr: SocketAddr,
    pub participants: Vec<Participant>,
    seed: u64,
    /// The links, by (from, to); ordered, so that deliveries due at the same time come in
    /// the same order in every run.
    links: BTreeMap<(SocketAddr, SocketAddr), Path>,
    /// Probability that an SRTP or SRTCP datagram is lost, each way.
    pub loss: f64,
    /// Probability that any other datagram (STUN, DTLS) is lost, each way: set before
    /// anyone joins for loss from the first packet.
    pub control_loss: f64,
    delay: Duration,
    /// Datagrams the network dropped at random.
    pub lost: u64,
    /// Datagrams a capped link's queue dropped.
    pub queue_drops: u64,
    /// SRTP packets the SFU sent, per SSRC (the header is not encrypted).
    pub sfu_sent: HashMap<SSRC, u64>,
    /// The sequence numbers the SFU sent, per SSRC, in sending order.
    pub sfu_seqs: HashMap<SSRC, Vec<u16>>,
    /// Until when SRTCP from the SFU to a participant (by index) is lost.
    pub rtcp_blackout: Option<(usize, Instant)>,
}

/// Participant `index`'s address.
fn participant_addr(index: usize) -> SocketAddr {
    format!("10.0.1.{}:40000", index + 1).parse().unwrap()
}

fn is_srtp(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (128..=191).contains(b))
}

/// The SSRC of an SRTP packet (not SRTCP, whose second byte is 200..=207, RFC 5761).
fn srtp_ssrc(datagram: &[u8]) -> Option<SSRC> {
    let header = datagram.get(..12)?;
    (is_srtp(datagram) && !(200..=207).contains(&header[1]))
        .then(|| u32::from_be_bytes([header[8], header[9], header[10], header[11]]))
}

impl Sim {
    /// An empty world: `loss` of media datagrams each way, `delay` one way.
    pub fn new(seed: u64, loss: f64, delay: Duration) -> Sim {
        let now = Instant::now();
        let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
        Sim {
            now,
            start: now,
            sfu: Sfu::with_seed(sfu_addr, seed),
            sfu_addr,
            participants: Vec::new(),
            seed,
            links: BTreeMap::new(),
            loss,
            control_loss: 0.0,
            delay,
            lost: 0,
            queue_drops: 0,
            sfu_sent: HashMap::new(),
            sfu_seqs: HashMap::new(),
            rtcp_blackout: None,
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// `name` joins the room and offers `streams`; it starts sending once connected.
    /// Returns its index.
    pub fn join(&mut self, name: &str, streams: &[Publish]) -> usize {
        let index = self.participants.len();
        let addr = participant_addr(index);
        let mut client = Client::new(name, addr, streams, self.now).unwrap();
        self.sfu.participant_joined(ROOM, name);
        let offer = client.offer(self.now).unwrap();
        let answer = self.sfu.handle_offer(ROOM, name, &offer, self.now).unwrap();
        client.apply_answer(&answer, self.now).unwrap();
        self.participants.push(Participant {
            name: name.to_owned(),
            client,
            connected: false,
            gone: false,
            sources: streams.iter().map(Source::new).collect(),
            tracks: HashMap::new(),
            track_ids: HashMap::new(),
            rtp: Vec::new(),
            plis: Vec::new(),
        });
        self.pump();
        index
    }

    /// Participant `index` leaves the room (signaling tells the SFU) and goes quiet.
    pub fn leave(&mut self, index: usize) {
        let name = self.participants[index].name.clone();
        self.participants[index].gone = true;
        self.sfu.participant_left(ROOM, &name, self.now);
    }

    /// Caps participant `index`'s downlink (SFU to it) at `bps`, or lifts the cap.
    pub fn cap_downlink(&mut self, index: usize, bps: Option<u64>) {
        let to = self.participants[index].client.addr();
        let now = self.elapsed();
        let bandwidth = bps.map(|bps| Bandwidth {
            kbps: bps as f64 / 1000.0,
            queue_ms: MAX_QUEUE_MS,
        });
        self.path(self.sfu_addr, to)
            .media
            .change_now(now, ChangeKind::Bandwidth { bandwidth });
    }

    /// The link from `from` to `to`, made on first use.
    fn path(&mut self, from: SocketAddr, to: SocketAddr) -> &mut Path {
        let (seed, loss, delay_ms) = (self.seed, self.loss, self.delay.as_secs_f64() * 1000.0);
        let control_loss = self.control_loss;
        self.links.entry((from, to)).or_insert_with(|| {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&(seed, from, to), &mut hasher);
            let seed = std::hash::Hasher::finish(&hasher);
            let delay_only = Impairment {
                delay_ms,
                ..Impairment::default()
            };
            Path {
                media: Link::new(
                    Impairment {
                        loss: Loss::Uniform { rate: loss },
                        ..delay_only.clone()
                    },
                    seed,
                ),
                control: Link::new(
                    Impairment {
                        loss: Loss::Uniform { rate: control_loss },
                        ..delay_only
                    },
                    seed.wrapping_add(1),
                ),
            }
        })
    }

    /// Participant `index` asks for a keyframe of the forwarded stream `ssrc`.
    pub fn request_keyframe(&mut self, index: usize, ssrc: SSRC) {
        let now = self.now;
        self.participants[index]
            .client
            .request_keyframe(ssrc, now)
            .unwrap();
        self.pump();
    }

    /// Runs the world for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.step(until);
        }
    }

    fn step(&mut self, until: Instant) {
        let mut next = (self.now + MAX_STEP).min(until);
        for path in self.links.values() {
            for due in [path.media.next_due(), path.control.next_due()]
                .into_iter()
                .flatten()
            {
                next = next.min(self.start + due);
            }
        }
        if let Some(due) = self.sfu.poll_timeout() {
            next = next.min(due);
        }
        for p in self.participants.iter_mut().filter(|p| !p.gone) {
            if let Some(due) = p.client.poll_timeout() {
                next = next.min(due);
            }
            for source in &p.sources {
                if let Some(due) = source.next {
                    next = next.min(due);
                }
            }
        }
        self.now = next.max(self.now);
        let now = self.now;

        // Deliveries.
        let elapsed = self.elapsed();
        let mut arrived = Vec::new();
        for (&(from, to), path) in &mut self.links {
            for link in [&mut path.control, &mut path.media] {
                while let Some(payload) = link.poll(elapsed) {
                    arrived.push((from, to, payload));
                }
            }
        }
        for (from, to, payload) in arrived {
            if to == self.sfu_addr {
                self.sfu.handle_datagram(now, from, &payload);
            } else if let Some(p) = self
                .participants
                .iter_mut()
                .find(|p| p.client.addr() == to && !p.gone)
            {
                let _ = p.client.handle_datagram(now, from, &payload);
            }
        }
        // Timers.
        if self.sfu.poll_timeout().is_some_and(|due| due <= now) {
            self.sfu.handle_timeout(now);
        }
        for p in self.participants.iter_mut().filter(|p| !p.gone) {
            if p.client.poll_timeout().is_some_and(|due| due <= now) {
                let _ = p.client.handle_timeout(now);
            }
        }
        // Media.
        for p in self
            .participants
            .iter_mut()
            .filter(|p| p.connected && !p.gone)
        {
            for source in &mut p.sources {
                send_due(&mut p.client, source, now);
            }
        }
        self.pump();
    }

    /// Moves events, datagrams and signaling until nothing is left to move.
    fn pump(&mut self) {
        let now = self.now;
        // Participant events.
        for p in &mut self.participants {
            while let Some(event) = p.client.poll_event() {
                match event {
                    ClientEvent::Connected => p.connected = true,
                    ClientEvent::Closed => p.connected = false,
                    ClientEvent::TrackOpened {
                        ssrc,
                        stream_id,
                        track_id,
                        kind,
                    } => {
                        p.tracks.insert(ssrc, (stream_id, kind));
                        p.track_ids.insert(ssrc, track_id);
                    }
                    ClientEvent::Rtp(packet) => p.rtp.push(Received {
                        at: now,
                        ssrc: packet.header.ssrc,
                        seq: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        quality: packet.payload.first().copied().unwrap_or(0),
                        keyframe: packet.payload.get(1) == Some(&1),
                    }),
                    ClientEvent::Rtcp(packets) => {
                        use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
                        for packet in packets {
                            if let Some(pli) =
                                packet.as_any().downcast_ref::<PictureLossIndication>()
                            {
                                p.plis.push((now, pli.media_ssrc));
                                for layer in p.sources.iter_mut().flat_map(|s| &mut s.layers) {
                                    if layer.ssrc == pli.media_ssrc {
                                        layer.keyframe_due = true;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // SFU offers are answered at once (signaling is not what these tests are about).
        while let Some(signal) = self.sfu.poll_signal() {
            let SignalOut::Offer { to, sdp, .. } = signal else {
                continue;
            };
            if let Some(p) = self
                .participants
                .iter_mut()
                .find(|p| p.name == to && !p.gone)
            {
                let answer = p.client.accept_offer(&sdp, now).unwrap();
                self.sfu.handle_answer(ROOM, &to, &answer, now).unwrap();
            }
        }
        // Datagrams onto the wire.
        let mut outgoing = Vec::new();
        while let Some(transmit) = self.sfu.poll_transmit() {
            outgoing.push((self.sfu_addr, transmit.to, transmit.payload.to_vec()));
        }
        for p in self.participants.iter_mut().filter(|p| !p.gone) {
            while let Some(transmit) = p.client.poll_transmit() {
                outgoing.push((p.client.addr(), transmit.to, transmit.payload.to_vec()));
            }
        }
        for (from, to, payload) in outgoing {
            self.send(now, from, to, payload);
        }
    }

    fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        if from == self.sfu_addr
            && let Some(ssrc) = srtp_ssrc(&payload)
        {
            *self.sfu_sent.entry(ssrc).or_default() += 1;
            self.sfu_seqs
                .entry(ssrc)
                .or_default()
                .push(u16::from_be_bytes([payload[2], payload[3]]));
        }
        let elapsed = now - self.start;
        let media = is_srtp(&payload);
        if let Some((index, until)) = self.rtcp_blackout
            && from == self.sfu_addr
            && to == participant_addr(index)
            && media
            && srtp_ssrc(&payload).is_none()
            && now < until
        {
            self.lost += 1;
            return;
        }
        let path = self.path(from, to);
        let link = if media {
            &mut path.media
        } else {
            &mut path.control
        };
        match link.send(elapsed, payload.len() + IP_UDP_BYTES, payload) {
            Fate::Lost => self.lost += 1,
            Fate::QueueDropped => self.queue_drops += 1,
            Fate::Delivered { .. } | Fate::Outage => {}
        }
    }
}

/// Sends a source's frame (or audio packet) if one is due.
fn send_due(client: &mut Client, source: &mut Source, now: Instant) {
    let due = *source.next.get_or_insert(now);
    if due > now {
        return;
    }
    source.next = Some(due + source.interval);
    let frame = source.frame;
    source.frame = frame.wrapping_add(1);
    let video = source.codec != Codec::Opus;
    let clock = if video { 3000 } else { 960 };
    let timestamp = u32::from(frame).wrapping_mul(clock);
    for layer in &mut source.layers {
        let keyframe = video && std::mem::take(&mut layer.keyframe_due);
        for i in 0..layer.packets_per_frame {
            let seq = layer.seq;
            layer.seq = seq.wrapping_add(1);
            let size = if video { 1000 } else { 120 };
            let mut payload = vec![0u8; size];
            payload[0] = layer.quality;
            payload[1] = u8::from(keyframe);
            payload[2..4].copy_from_slice(&seq.to_be_bytes());
            let outgoing = Outgoing {
                seq,
                timestamp,
                marker: video && i + 1 == layer.packets_per_frame,
                frame: video.then_some(FrameInfo {
                    number: frame,
                    start: i == 0,
                    keyframe,
                }),
                payload: Bytes::from(payload),
            };
            if client.send_rtp(layer.ssrc, outgoing, now).is_ok() {
                layer.sent.push((seq, now));
            }
        }
    }
}
