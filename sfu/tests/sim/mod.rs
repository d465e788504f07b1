//! A deterministic world for the SFU core: the sans-IO [`Sfu`], sans-IO [`Client`]s with
//! real DTLS-SRTP, and a seeded network between them (a one-way delay, and loss of SRTP and
//! SRTCP datagrams). Time is injected: a run of ten simulated seconds takes well under one
//! real second. Each link draws its losses from its own generator, seeded from the seed and
//! the link's two addresses, so whether the n-th media datagram on a link is lost depends on
//! the seed alone (SSRCs and keys are random per run; they change no decision).
#![allow(dead_code, clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::rtp_transceiver::SSRC;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sotto_sfu::client::{Client, ClientEvent, Publish};
use sotto_sfu::core::{Sfu, SignalOut};

pub const ROOM: &str = "room-1";
const SFU_ADDR: &str = "10.0.0.1:5000";
/// The longest step of the simulated clock.
const MAX_STEP: Duration = Duration::from_millis(5);

/// A stream a participant sends on a schedule: one packet per `interval`.
struct Source {
    publish: Publish,
    interval: Duration,
    next: Option<Instant>,
    seq: u16,
    /// When each sequence number was sent.
    sent: Vec<(u16, Instant)>,
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
    /// Every RTP packet received: when, SSRC, sequence number.
    pub rtp: Vec<(Instant, SSRC, u16)>,
    /// Keyframe requests (PLIs) received about the participant's own streams.
    pub plis: Vec<Instant>,
}

impl Participant {
    /// The sequence numbers of `ssrc` the participant sent in `[from, to)`.
    pub fn sent_between(&self, ssrc: SSRC, from: Instant, to: Instant) -> Vec<u16> {
        self.sources
            .iter()
            .filter(|s| s.publish.ssrc == ssrc)
            .flat_map(|s| s.sent.iter())
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

    /// Distinct sequence numbers received on `ssrc`, and when the last packet came.
    pub fn received(&self, ssrc: SSRC) -> (BTreeSet<u16>, Option<Instant>) {
        let seqs = self
            .rtp
            .iter()
            .filter(|(_, s, _)| *s == ssrc)
            .map(|(_, _, seq)| *seq)
            .collect();
        let last = self
            .rtp
            .iter()
            .filter(|(_, s, _)| *s == ssrc)
            .map(|(at, _, _)| *at)
            .max();
        (seqs, last)
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

/// The world.
pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    pub sfu: Sfu,
    sfu_addr: SocketAddr,
    pub participants: Vec<Participant>,
    seed: u64,
    /// One loss generator per (from, to) link.
    links: HashMap<(SocketAddr, SocketAddr), StdRng>,
    /// Probability that an SRTP or SRTCP datagram is lost, each way.
    pub loss: f64,
    delay: Duration,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// Datagrams the network dropped.
    pub lost: u64,
    /// SRTP packets the SFU sent, per SSRC (the header is not encrypted).
    pub sfu_sent: HashMap<SSRC, u64>,
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
            sfu: Sfu::new(sfu_addr),
            sfu_addr,
            participants: Vec::new(),
            seed,
            links: HashMap::new(),
            loss,
            delay,
            in_flight: BinaryHeap::new(),
            order: 0,
            lost: 0,
            sfu_sent: HashMap::new(),
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// `name` joins the room and offers `streams`; it starts sending each one packet per
    /// interval (video every 10 ms, audio every 20 ms) once connected. Returns its index.
    pub fn join(&mut self, name: &str, streams: &[Publish]) -> usize {
        let index = self.participants.len();
        let addr: SocketAddr = format!("10.0.1.{}:40000", index + 1).parse().unwrap();
        let mut client = Client::new(name, addr, streams, self.now).unwrap();
        self.sfu.participant_joined(ROOM, name);
        let offer = client.offer(self.now).unwrap();
        let answer = self.sfu.handle_offer(ROOM, name, &offer, self.now).unwrap();
        client.apply_answer(&answer, self.now).unwrap();
        let sources = streams
            .iter()
            .map(|publish| Source {
                publish: *publish,
                interval: if publish.rtx_ssrc.is_some() {
                    Duration::from_millis(10)
                } else {
                    Duration::from_millis(20)
                },
                next: None,
                seq: 0,
                sent: Vec::new(),
            })
            .collect();
        self.participants.push(Participant {
            name: name.to_owned(),
            client,
            connected: false,
            gone: false,
            sources,
            tracks: HashMap::new(),
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
        if let Some(Reverse(first)) = self.in_flight.peek() {
            next = next.min(first.at);
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
        while self
            .in_flight
            .peek()
            .is_some_and(|Reverse(first)| first.at <= now)
        {
            let Some(Reverse(datagram)) = self.in_flight.pop() else {
                break;
            };
            if datagram.to == self.sfu_addr {
                self.sfu
                    .handle_datagram(now, datagram.from, &datagram.payload);
            } else if let Some(p) = self
                .participants
                .iter_mut()
                .find(|p| p.client.addr() == datagram.to && !p.gone)
            {
                let _ = p
                    .client
                    .handle_datagram(now, datagram.from, &datagram.payload);
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
                let due = *source.next.get_or_insert(now);
                if due > now {
                    continue;
                }
                let seq = source.seq;
                let payload = Bytes::from(seq.to_be_bytes().repeat(60));
                let ts = u32::from(seq).wrapping_mul(960);
                if p.client
                    .send_rtp(source.publish.ssrc, seq, ts, false, payload, now)
                    .is_ok()
                {
                    source.sent.push((seq, now));
                }
                source.seq = seq.wrapping_add(1);
                source.next = Some(due + source.interval);
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
                        kind,
                    } => {
                        p.tracks.insert(ssrc, (stream_id, kind));
                    }
                    ClientEvent::Rtp(packet) => {
                        p.rtp
                            .push((now, packet.header.ssrc, packet.header.sequence_number));
                    }
                    ClientEvent::Rtcp(packets) => {
                        use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
                        for packet in packets {
                            if packet.as_any().is::<PictureLossIndication>() {
                                p.plis.push(now);
                            }
                        }
                    }
                }
            }
        }
        // SFU offers are answered at once (signaling is not what these tests are about).
        while let Some(SignalOut::Offer { to, sdp, .. }) = self.sfu.poll_signal() {
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
        for (from, _, payload) in &outgoing {
            if *from == self.sfu_addr
                && let Some(ssrc) = srtp_ssrc(payload)
            {
                *self.sfu_sent.entry(ssrc).or_default() += 1;
            }
        }
        for (from, to, payload) in outgoing {
            let seed = self.seed;
            let link = self.links.entry((from, to)).or_insert_with(|| {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&(seed, from, to), &mut hasher);
                StdRng::seed_from_u64(std::hash::Hasher::finish(&hasher))
            });
            if is_srtp(&payload) && link.random_bool(self.loss) {
                self.lost += 1;
                continue;
            }
            self.order += 1;
            self.in_flight.push(Reverse(InFlight {
                at: now + self.delay,
                order: self.order,
                from,
                to,
                payload,
            }));
        }
    }
}
