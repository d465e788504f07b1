//! The SFU core on the transport it owns (issue 19), sans-IO: rooms of participants, each
//! with its own [`Transport`] (ICE-lite, DTLS, SRTP) and [`Negotiation`] (SDP), all on one
//! UDP address. A participant's published streams become producers ([`Source`], with
//! their simulcast layers); every other participant in the room gets a consumer of each
//! ([`Consumer`], in the producer's list), and one packet goes to all of them in one pass
//! of [`super::fanout::fan_out`] per send lane. RTCP is handled here: receiver reports, NACKs and transport-wide
//! feedback to publishers ([`ReceiveSide`]), NACKs answered with RTX from the producer's
//! history, keyframe requests relayed (rate-limited), and each subscriber's bandwidth
//! estimate from its feedback ([`crate::core::send::SendSide`]), from which its layers
//! are chosen. The core reads RTP headers and extensions only, never payloads.
//!
//! Who may be in which room is signaling's to say ([`Sfu::participant_joined`] /
//! [`Sfu::participant_left`]); an offer from anyone else is refused. The public API is
//! the one the rtc-leg core had, so the driver, the control task and the tests run
//! either.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtc::rtcp::reception_report::ReceptionReport;

use super::fanout::{
    Consumer, Outbox, Rtx, Share, Source as Packet, Subscriber, fan_out_share, retransmit,
    sender_report,
};
use super::history::{AUDIO_HISTORY, History, VIDEO_HISTORY};
use super::lanes::Lanes;
use super::receive::{ReceiveSide, Stream};
use super::rtp::{Header, RtpView, write_forwarded};
use super::sdp::{ExtensionIds, Kind, LocalParameters, Negotiation, Published};
use super::transport::{DtlsIdentity, Inbound, Transport, TransportState};
use super::{
    ALLOCATION_INTERVAL, CLIMB_STEP, CoreError, Counters, DEFAULT_LAST_N,
    KEYFRAME_REQUEST_INTERVAL, LEG_TIMEOUT, LISTENER_LOSS_HOLD, ParticipantId, PayloadTap, RoomId,
    SignalOut, TOP_QUALITY,
};
use crate::demux::{DatagramKind, classify, stun_local_ufrag};
use crate::ice_lite::LiteAgent;
use crate::layers::{
    Ceiling, LAYER_SILENT, LOSS_GRACE, RateMeter, choose_layer, dd_keyframe_start, loss_bound,
    rid_quality,
};
use crate::leg::{Codec, Transmit};
use crate::red::{Arrival, Repair};
use crate::speaker::SpeakerTracker;

/// How often silent participants are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The budget assumed for a subscriber before its estimate arrives, bit/s.
const DEFAULT_BUDGET_BPS: u64 = 2_000_000;

/// How often a room's last-N set is worked out again (it sorts the room's publishers by
/// loudness, which is not done per packet).
const LAST_N_REFRESH: Duration = Duration::from_millis(100);

/// How often each subscriber gets sender reports about the streams it receives (as
/// browsers send theirs).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The wall clock the core starts at unless told ([`Sfu::set_wall_clock`]): 2026-01-01,
/// so a simulation repeats.
const SIMULATED_WALL_CLOCK: Duration = Duration::from_secs(1_767_225_600);

/// How often a published audio source's worst listener loss is worked out again when no
/// report raised it (reports come about once a second per listener).
const LOSS_REFRESH: Duration = Duration::from_millis(500);

/// A retransmission of a packet older than this is not sent: too late to be played
/// (the budget the rtc legs ran, `sotto_interceptors::rtx_budget::MAX_AGE`).
const RTX_MAX_AGE: Duration = sotto_interceptors::rtx_budget::MAX_AGE;

/// ICE credentials: a ufrag of 16 and a password of 32 characters (RFC 8839 asks for at
/// least 4 and 22).
const UFRAG_LEN: usize = 16;
const PASSWORD_LEN: usize = 32;

/// A participant's slot among the core's participants (and subscribers).
type Index = usize;

/// One simulcast layer of a published source (or its one stream).
struct Layer {
    quality: u8,
    ssrc: u32,
    rate: RateMeter,
    history: History,
    /// Rebuilds audio its publisher's uplink lost from the RED copies of later packets.
    repair: Repair,
    keyframe_requested: Option<Instant>,
}

/// A published source: a producer, and the consumers it feeds.
struct Source {
    mid: String,
    kind: Kind,
    codec: Codec,
    red_payload_type: Option<u8>,
    extensions: ExtensionIds,
    layers: Vec<Layer>,
    consumers: Vec<Consumer>,
    /// Its track id in subscribers' SDP (`a=msid:<publisher> <this>`).
    track_id: String,
    /// The layer ranks last announced to the publisher (`layers`).
    announced: Option<Vec<u8>>,
    /// Audio: the loss each listener last reported (`fraction_lost`), and when.
    listener_loss: HashMap<Index, (u8, Instant), foldhash::fast::RandomState>,
    /// The worst of those passed to the publisher's reports, and when it was worked out.
    worst_loss: Option<((u8, Instant), Instant)>,
}

impl Source {
    fn clock_rate(&self) -> u32 {
        self.codec.clock_rate()
    }
}

/// What a participant receives of one source.
struct Subscription {
    publisher: Index,
    source: usize,
    mid: String,
    ssrc: u32,
    track_id: String,
    /// Its consumer exists (the participant answered the offer that added it).
    active: bool,
}

struct Participant {
    room: RoomId,
    id: ParticipantId,
    negotiation: Negotiation,
    receive: ReceiveSide,
    /// The sections it publishes on, from its offer.
    sections: Vec<Published>,
    sources: Vec<Source>,
    /// Each published SSRC: its source and layer.
    layer_of: HashMap<u32, (usize, usize)>,
    /// SSRCs of published streams found unsupported (counted once each; their packets
    /// after the first are counted as drops), up to [`MAX_UNSUPPORTED`].
    unsupported: Vec<u32>,
    subscriptions: Vec<Subscription>,
    /// Sources were added to its session since the last offer.
    renegotiate: bool,
    next_allocation: Instant,
    /// When sender reports about its forwarded streams are next due.
    next_report: Instant,
    ceiling: Ceiling,
    loss_grace_until: Option<Instant>,
    last_heard: Instant,
}

/// A room's loudness and its last-N set.
#[derive(Default)]
struct Room {
    speakers: SpeakerTracker<Index>,
    /// The publishers whose audio goes out when the room has more than last-N, and when
    /// that was worked out.
    loudest: Vec<Index>,
    loudest_at: Option<Instant>,
}

/// The SFU core.
pub struct Sfu {
    local_addr: SocketAddr,
    identity: DtlsIdentity,
    rng: ChaCha8Rng,
    members: HashMap<RoomId, BTreeSet<ParticipantId>>,
    rooms: HashMap<RoomId, Room>,
    participants: Vec<Option<Participant>>,
    subscribers: Vec<Option<Subscriber>>,
    by_participant: HashMap<(RoomId, ParticipantId), Index>,
    by_ufrag: HashMap<String, Index>,
    by_addr: HashMap<SocketAddr, Index>,
    deadlines: BTreeSet<(Instant, Index)>,
    deadline_of: HashMap<Index, Instant>,
    next_sweep: Option<Instant>,
    last_n: usize,
    /// STUN, DTLS and RTCP to send.
    control: VecDeque<Transmit>,
    /// Forwarded media to send, in one lane per send worker.
    lanes: Lanes,
    signals: VecDeque<SignalOut>,
    counters: Counters,
    payload_tap: Option<PayloadTap>,
    /// The datagram being handled (decrypted in place), and a packet being rebuilt.
    scratch: Vec<u8>,
    rebuilt: Vec<u8>,
    /// The wall clock (since the Unix epoch) at the first `now` seen, for sender reports'
    /// NTP times ([`Sfu::set_wall_clock`]).
    wall_clock: Duration,
    first_now: Option<Instant>,
}

impl Sfu {
    /// An SFU whose participants all use `local_addr`, with a random seed.
    pub fn new(local_addr: SocketAddr) -> Sfu {
        Sfu::with_seed(local_addr, rand::random())
    }

    /// The wall clock at the first `now` the core sees, since the Unix epoch, for sender
    /// reports' NTP times (the driver reads it; the core reads no clock). Without it the
    /// core counts from a fixed date, as a simulation does.
    pub fn set_wall_clock(&mut self, since_unix_epoch: Duration) {
        self.wall_clock = since_unix_epoch;
    }

    /// An SFU whose random choices (ICE credentials, SSRCs) come from `seed`, so a
    /// simulation repeats exactly.
    pub fn with_seed(local_addr: SocketAddr, seed: u64) -> Sfu {
        // A certificate cannot fail to generate on a working system; the core has no
        // error path at construction, as the rtc-leg core had none.
        let identity = DtlsIdentity::generate().unwrap_or_else(|err| {
            panic!("the SFU's DTLS certificate could not be generated: {err}")
        });
        Sfu {
            local_addr,
            identity,
            rng: ChaCha8Rng::seed_from_u64(seed),
            members: HashMap::new(),
            rooms: HashMap::new(),
            participants: Vec::new(),
            subscribers: Vec::new(),
            by_participant: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
            next_sweep: None,
            last_n: DEFAULT_LAST_N,
            control: VecDeque::new(),
            lanes: Lanes::new(1),
            signals: VecDeque::new(),
            counters: Counters::default(),
            payload_tap: None,
            scratch: Vec::with_capacity(2048),
            rebuilt: Vec::with_capacity(2048),
            wall_clock: SIMULATED_WALL_CLOCK,
            first_now: None,
        }
    }

    /// `now` on the wall clock, in NTP's 32.32 fixed point (RFC 3550 §4).
    fn ntp(&mut self, now: Instant) -> u64 {
        let first = *self.first_now.get_or_insert(now);
        let wall = self.wall_clock + now.saturating_duration_since(first);
        let seconds = wall.as_secs() + NTP_UNIX_OFFSET;
        let fraction = (u64::from(wall.subsec_nanos()) << 32) / 1_000_000_000;
        (seconds << 32) | fraction
    }

    /// The (publisher, source) of every stream `index` receives.
    fn active_subscriptions(&self, index: Index) -> Vec<(Index, usize)> {
        self.participant(index).map_or_else(Vec::new, |p| {
            p.subscriptions
                .iter()
                .filter(|s| s.active)
                .map(|s| (s.publisher, s.source))
                .collect()
        })
    }

    /// Sends `index` a sender report for each stream it receives that has sent anything.
    fn send_reports(&mut self, index: Index, now: Instant) {
        let ntp = self.ntp(now);
        let keys = self.active_subscriptions(index);
        let mut reports: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        for (publisher, source) in keys {
            let Some(s) = self
                .participant(publisher)
                .and_then(|p| p.sources.get(source))
            else {
                continue;
            };
            let report = s
                .consumers
                .iter()
                .find(|c| c.subscriber == index)
                .and_then(|c| sender_report(c, s.clock_rate(), now, ntp));
            if let Some(report) = report {
                reports.push(Box::new(report));
            }
        }
        if reports.is_empty() {
            return;
        }
        self.counters.sender_reports += reports.len() as u64;
        // A compound packet stays well under the MTU: at most 30 reports in one.
        for chunk in reports.chunks(30) {
            if let Ok(raw) = rtc::rtcp::packet::marshal(chunk) {
                self.send_rtcp(index, raw.to_vec());
            }
        }
    }

    /// Shows `tap` every RTP packet this SFU receives for forwarding (see the rtc-leg
    /// core's `set_payload_tap`).
    pub fn set_payload_tap(&mut self, tap: Option<PayloadTap>) {
        self.payload_tap = tap;
    }

    /// Forward the audio of at most `n` publishers per room (the loudest; at least 1).
    pub fn set_last_n(&mut self, n: usize) {
        self.last_n = n.max(1);
    }

    /// The room's dominant speaker (by RFC 6464 levels), as its participant id.
    pub fn dominant_speaker(&self, room: &str) -> Option<ParticipantId> {
        let index = *self.rooms.get(room)?.speakers.dominant()?;
        self.participant(index).map(|p| p.id.clone())
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Participants with a transport, per room.
    pub fn legs_in(&self, room: &str) -> usize {
        self.participants
            .iter()
            .flatten()
            .filter(|p| p.room == room)
            .count()
    }

    /// Participants whose transport is up (ICE and DTLS), per room.
    pub fn connected_legs_in(&self, room: &str) -> usize {
        self.participants
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| p.room == room))
            .filter(|(i, _)| {
                self.subscribers[*i]
                    .as_ref()
                    .is_some_and(|s| s.transport.state() == TransportState::Connected)
            })
            .count()
    }

    /// Signaling says `who` joined `room`.
    pub fn participant_joined(&mut self, room: &str, who: &str) {
        self.members
            .entry(room.to_owned())
            .or_default()
            .insert(who.to_owned());
    }

    /// Signaling says `who` left `room` (or disconnected): its transport goes and nobody
    /// receives its streams any more.
    pub fn participant_left(&mut self, room: &str, who: &str, now: Instant) {
        if let Some(members) = self.members.get_mut(room) {
            members.remove(who);
            if members.is_empty() {
                self.members.remove(room);
            }
        }
        self.end_leg(room, who, now);
    }

    /// The participant hung up its media (it may stay in the room): its transport goes.
    pub fn end_leg(&mut self, room: &str, who: &str, now: Instant) {
        if let Some(index) = self
            .by_participant
            .remove(&(room.to_owned(), who.to_owned()))
        {
            self.remove(index, now);
        }
    }

    /// Participants signaling has told us about, per room (for `/metrics`).
    pub fn room_sizes(&self) -> Vec<(RoomId, usize)> {
        self.members
            .iter()
            .map(|(room, members)| (room.clone(), members.len()))
            .collect()
    }

    fn participant(&self, index: Index) -> Option<&Participant> {
        self.participants.get(index).and_then(Option::as_ref)
    }

    fn participant_mut(&mut self, index: Index) -> Option<&mut Participant> {
        self.participants.get_mut(index).and_then(Option::as_mut)
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())]))
            .collect()
    }

    fn remove(&mut self, index: Index, now: Instant) {
        let Some(mut gone) = self.participants.get_mut(index).and_then(Option::take) else {
            return;
        };
        if let Some(subscriber) = self.subscribers.get_mut(index).and_then(Option::as_mut) {
            subscriber.transport.close(now);
            if let Some(to) = subscriber.transport.remote_addr() {
                while let Some(transmit) = subscriber.transport.poll_transmit() {
                    self.control.push_back(Transmit {
                        to,
                        payload: BytesMut::from(&transmit.payload[..]),
                    });
                }
            }
        }
        self.subscribers[index] = None;
        self.file_deadline(index, None);
        self.by_ufrag.retain(|_, i| *i != index);
        self.by_addr.retain(|_, i| *i != index);
        self.by_participant.retain(|_, i| *i != index);
        if let Some(room) = self.rooms.get_mut(&gone.room) {
            room.speakers.remove(&index);
            room.loudest.retain(|i| *i != index);
        }
        // Nobody receives its streams; it receives nobody's.
        gone.sources.clear();
        for other in self.participants.iter_mut().flatten() {
            other.subscriptions.retain(|s| s.publisher != index);
            for source in &mut other.sources {
                source.consumers.retain(|c| c.subscriber != index);
                source.listener_loss.remove(&index);
            }
        }
        let room = gone.room.clone();
        if !self.participants.iter().flatten().any(|p| p.room == room) {
            self.rooms.remove(&room);
        } else {
            self.announce_layers(&room);
        }
        tracing::debug!(room = %room, "a participant's transport was removed");
    }

    /// A participant's offer: sets up its transport and returns the SFU's answer. Then,
    /// if others already publish, an SFU offer for their streams follows in
    /// [`Sfu::poll_signal`].
    pub fn handle_offer(
        &mut self,
        room: &str,
        from: &str,
        sdp: &str,
        now: Instant,
    ) -> Result<String, CoreError> {
        if !self
            .members
            .get(room)
            .is_some_and(|members| members.contains(from))
        {
            return Err(CoreError::NotInRoom);
        }
        // The wall clock read at construction goes with the first `now` the core sees.
        self.first_now.get_or_insert(now);
        let ufrag = self.token(UFRAG_LEN);
        let password = self.token(PASSWORD_LEN);
        let mut negotiation = Negotiation::new(
            LocalParameters {
                ufrag: ufrag.clone(),
                password: password.clone(),
                fingerprint: self.identity.fingerprint().to_owned(),
                candidate: self.local_addr,
            },
            self.rng.next_u64(),
        );
        let answer = negotiation.accept_offer(sdp)?;
        let fingerprint = negotiation
            .remote_fingerprint()
            .cloned()
            .ok_or(CoreError::NoOffer)?;
        let key = (room.to_owned(), from.to_owned());
        if let Some(old) = self.by_participant.remove(&key) {
            // A fresh offer replaces the participant's transport (a reconnect).
            self.remove(old, now);
        }
        let transport = Transport::new(
            &self.identity,
            LiteAgent::new(&ufrag, &password),
            fingerprint,
        );
        let transport_cc = answer
            .published
            .iter()
            .find_map(|section| section.extensions.transport_cc);
        let index = match self.participants.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.participants.push(None);
                self.subscribers.push(None);
                self.participants.len() - 1
            }
        };
        self.participants[index] = Some(Participant {
            room: room.to_owned(),
            id: from.to_owned(),
            negotiation,
            receive: ReceiveSide::new(transport_cc),
            sections: answer.published.clone(),
            sources: Vec::new(),
            layer_of: HashMap::new(),
            unsupported: Vec::new(),
            subscriptions: Vec::new(),
            renegotiate: false,
            next_allocation: now,
            next_report: now + REPORT_INTERVAL,
            ceiling: Ceiling::default(),
            loss_grace_until: None,
            last_heard: now,
        });
        self.subscribers[index] = Some(Subscriber::new(transport));
        self.by_ufrag.insert(ufrag, index);
        self.by_participant.insert(key, index);
        self.rooms.entry(room.to_owned()).or_default();
        self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
        // Subscribe the newcomer to what the room already publishes.
        let publishers: Vec<(Index, usize)> = self
            .participants
            .iter()
            .enumerate()
            .filter(|(other, p)| *other != index && p.as_ref().is_some_and(|p| p.room == room))
            .flat_map(|(other, p)| {
                let count = p.as_ref().map_or(0, |p| p.sources.len());
                (0..count).map(move |source| (other, source))
            })
            .collect();
        for (publisher, source) in publishers {
            self.subscribe(index, publisher, source);
        }
        self.offer_if_needed(index)?;
        self.flush(index);
        Ok(answer.sdp)
    }

    /// A participant's answer to an SFU offer: the streams it accepted start.
    pub fn handle_answer(
        &mut self,
        room: &str,
        from: &str,
        sdp: &str,
        now: Instant,
    ) -> Result<(), CoreError> {
        let index = *self
            .by_participant
            .get(&(room.to_owned(), from.to_owned()))
            .ok_or(CoreError::NotInRoom)?;
        let participant = self.participant_mut(index).ok_or(CoreError::NotInRoom)?;
        if !participant.negotiation.offer_outstanding() {
            return Err(CoreError::NoOffer);
        }
        let sending = participant.negotiation.accept_answer(sdp)?;
        let mut started = Vec::new();
        for subscription in &mut participant.subscriptions {
            if subscription.active {
                continue;
            }
            let Some((format, red, extensions)) = sending
                .iter()
                .find(|s| s.mid == subscription.mid)
                .and_then(|s| s.accepted)
            else {
                continue;
            };
            subscription.active = true;
            let mut consumer = Consumer::new(
                index,
                subscription.ssrc,
                format.payload_type,
                extensions,
                &subscription.mid,
            );
            consumer.red_payload_type = red;
            consumer.rtx = format.rtx_payload_type.map(|payload_type| Rtx {
                ssrc: subscription.ssrc.wrapping_add(1),
                payload_type,
                seq: 0,
            });
            started.push((subscription.publisher, subscription.source, consumer));
        }
        let room = participant.room.clone();
        for (publisher, source, mut consumer) in started {
            let seq: u16 = self.rng.random();
            if let Some(rtx) = consumer.rtx.as_mut() {
                rtx.seq = seq;
            }
            if let Some(source) = self
                .participant_mut(publisher)
                .and_then(|p| p.sources.get_mut(source))
            {
                // Audio has one layer and starts with it; video waits for the allocation.
                if source.kind == Kind::Audio {
                    consumer.target = source.layers.first().map(|l| l.ssrc);
                }
                source.consumers.push(consumer);
            }
        }
        // Choose the new consumers' layers now; each asks its publisher for a keyframe.
        self.allocate(index, now);
        self.announce_layers(&room);
        self.offer_if_needed(index)?;
        self.flush(index);
        Ok(())
    }

    /// Pauses (or resumes) a forwarded track for `who`: `track` is the track id of the
    /// stream in the participant's SDP (`a=msid:<stream> <track>`). A resumed track starts
    /// again at the next keyframe, continuing its sequence numbers.
    pub fn set_paused(
        &mut self,
        room: &str,
        who: &str,
        track: &str,
        paused: bool,
        now: Instant,
    ) -> Result<(), CoreError> {
        self.change_consumer(room, who, track, now, |consumer, source| {
            consumer.paused = paused;
            consumer.current = None;
            consumer.target = match source.kind {
                Kind::Audio => source.layers.first().copied(),
                Kind::Video => None,
            };
        })
    }

    /// The best simulcast layer (0 to [`TOP_QUALITY`]) `who` wants of a forwarded track;
    /// the bandwidth estimate may choose a lower one.
    pub fn set_max_quality(
        &mut self,
        room: &str,
        who: &str,
        track: &str,
        quality: u8,
        now: Instant,
    ) -> Result<(), CoreError> {
        self.change_consumer(room, who, track, now, |consumer, _| {
            consumer.max_quality = quality.min(TOP_QUALITY);
        })
    }

    fn change_consumer(
        &mut self,
        room: &str,
        who: &str,
        track: &str,
        now: Instant,
        change: impl FnOnce(&mut Consumer, &SourceView),
    ) -> Result<(), CoreError> {
        let index = *self
            .by_participant
            .get(&(room.to_owned(), who.to_owned()))
            .ok_or(CoreError::NotInRoom)?;
        let (publisher, source) = self
            .participant(index)
            .and_then(|p| p.subscriptions.iter().find(|s| s.track_id == track))
            .map(|s| (s.publisher, s.source))
            .ok_or_else(|| CoreError::NoSuchTrack(track.to_owned()))?;
        if let Some(source) = self
            .participant_mut(publisher)
            .and_then(|p| p.sources.get_mut(source))
        {
            let view = SourceView {
                kind: source.kind,
                layers: source.layers.iter().map(|l| l.ssrc).collect(),
            };
            if let Some(consumer) = source.consumers.iter_mut().find(|c| c.subscriber == index) {
                change(consumer, &view);
            }
        }
        self.allocate(index, now);
        self.announce_layers(room);
        self.flush(index);
        Ok(())
    }

    /// Tells each publisher of `room` which layers of its sources anyone receives, where
    /// that changed (as the rtc-leg core did).
    fn announce_layers(&mut self, room: &str) {
        for participant in self.participants.iter_mut().flatten() {
            if participant.room != room {
                continue;
            }
            for source in &mut participant.sources {
                let wanted = source
                    .consumers
                    .iter()
                    .filter(|c| !c.paused)
                    .map(|c| c.max_quality)
                    .max();
                let top = wanted.map(|w| if source.kind == Kind::Audio { 0 } else { w });
                let active: Vec<u8> = top.map_or_else(Vec::new, |w| (0..=w).collect());
                if source.announced.as_ref() != Some(&active) {
                    source.announced = Some(active.clone());
                    self.signals.push_back(SignalOut::Layers {
                        room: participant.room.clone(),
                        to: participant.id.clone(),
                        mid: source.mid.clone(),
                        active,
                    });
                }
            }
        }
    }

    /// Chooses the layer of every video source `index` receives, from its bandwidth
    /// estimate (audio is served first) and what it asked for; a new target layer is
    /// asked for a keyframe, and the consumer switches when one arrives.
    fn allocate(&mut self, index: Index, now: Instant) {
        if self.participant(index).is_none() {
            return;
        }
        let keys = self.active_subscriptions(index);
        let estimate = self.subscribers[index]
            .as_ref()
            .and_then(|s| s.send.estimate_bps())
            .unwrap_or(DEFAULT_BUDGET_BPS);
        let mut audio_bps = 0;
        // Each video source's layers (quality, SSRC, rate) and this subscriber's consumer.
        let mut video: Vec<VideoChoice> = Vec::new();
        for (publisher, source) in keys {
            let Some(s) = self
                .participant_mut(publisher)
                .and_then(|p| p.sources.get_mut(source))
            else {
                continue;
            };
            let is_video = s.kind == Kind::Video;
            let layers: Vec<(u8, u32, u64)> = s
                .layers
                .iter_mut()
                .map(|l| {
                    // A stopped video layer is left at once; audio pauses in DTX.
                    let bps = if is_video {
                        l.rate.live_bps(now)
                    } else {
                        l.rate.bps(now)
                    };
                    (l.quality, l.ssrc, bps)
                })
                .collect();
            if is_video {
                let consumer = s.consumers.iter().find(|c| c.subscriber == index).cloned();
                video.push(((publisher, source), layers, consumer));
            } else {
                audio_bps += layers.iter().map(|l| l.2).sum::<u64>();
            }
        }
        let video_bps: u64 = video
            .iter()
            .filter_map(|(_, layers, consumer)| {
                let consumer = consumer.as_ref().filter(|c| !c.paused)?;
                let current = consumer.current?;
                layers.iter().find(|l| l.1 == current).map(|l| l.2)
            })
            .sum();
        let allocated = audio_bps + video_bps;
        let Some(subscriber) = self.subscribers[index].as_mut() else {
            return;
        };
        let Some(participant) = self.participants[index].as_mut() else {
            return;
        };
        let lost = subscriber.loss.take().filter(|_| {
            participant
                .loss_grace_until
                .is_none_or(|until| now >= until)
        });
        let estimate = loss_bound(allocated, lost).map_or(estimate, |b| b.min(estimate));
        let budget = participant
            .ceiling
            .budget(now, estimate, allocated)
            .saturating_sub(audio_bps);
        let share = budget / (video.len().max(1) as u64);
        let mut changes: Vec<((Index, usize), u32, Option<Instant>)> = Vec::new();
        for (key, layers, consumer) in &video {
            let Some(consumer) = consumer.as_ref().filter(|c| !c.paused) else {
                continue;
            };
            let current = consumer
                .current
                .and_then(|c| layers.iter().find(|l| l.1 == c))
                .map(|l| l.0);
            let rates: Vec<(u8, u64)> = layers.iter().map(|l| (l.0, l.2)).collect();
            let Some(mut quality) = choose_layer(&rates, share, consumer.max_quality, current)
            else {
                continue;
            };
            let mut climbed_at = consumer.climbed_at;
            // Up one layer at a time, and not again until the last climb had time to show
            // losses: the estimate may be far above what the link carries.
            if let Some(c) = current
                && quality > c
            {
                let lately =
                    climbed_at.is_some_and(|at| now.saturating_duration_since(at) < CLIMB_STEP);
                if lately {
                    quality = c;
                } else {
                    quality = c + 1;
                    climbed_at = Some(now);
                }
            }
            let Some(target) = layers.iter().find(|l| l.0 == quality).map(|l| l.1) else {
                continue;
            };
            if current.is_some_and(|c| quality < c) {
                participant.loss_grace_until = Some(now + LOSS_GRACE);
            }
            changes.push((*key, target, climbed_at));
        }
        participant.next_allocation = now + ALLOCATION_INTERVAL;
        let mut keyframes = Vec::new();
        for ((publisher, source), target, climbed_at) in changes {
            let Some(consumer) = self
                .participant_mut(publisher)
                .and_then(|p| p.sources.get_mut(source))
                .and_then(|s| s.consumers.iter_mut().find(|c| c.subscriber == index))
            else {
                continue;
            };
            consumer.target = Some(target);
            consumer.climbed_at = climbed_at;
            // Until the switch, ask again each time the last request may have been lost
            // (rate-limited per stream).
            if consumer.current != Some(target) {
                keyframes.push((publisher, target));
            }
        }
        for (publisher, ssrc) in keyframes {
            self.request_keyframe(publisher, ssrc, now);
        }
    }

    /// Asks a publisher for a keyframe on one of its video streams (a PLI), at most once
    /// per [`KEYFRAME_REQUEST_INTERVAL`].
    fn request_keyframe(&mut self, publisher: Index, ssrc: u32, now: Instant) {
        let Some(participant) = self.participant_mut(publisher) else {
            return;
        };
        let Some(&(source, layer)) = participant.layer_of.get(&ssrc) else {
            return;
        };
        let Some(layer) = participant
            .sources
            .get_mut(source)
            .filter(|s| s.kind == Kind::Video)
            .and_then(|s| s.layers.get_mut(layer))
        else {
            return;
        };
        if layer
            .keyframe_requested
            .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        layer.keyframe_requested = Some(now);
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: ssrc,
        };
        if let Ok(raw) = rtc::shared::marshal::Marshal::marshal(&pli) {
            self.send_rtcp(publisher, raw.to_vec());
            self.counters.keyframe_requests_sent += 1;
        }
    }

    /// Encrypts and queues an RTCP compound packet for a participant.
    fn send_rtcp(&mut self, index: Index, mut packet: Vec<u8>) {
        let Some(subscriber) = self.subscribers.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let Some(to) = subscriber.transport.remote_addr() else {
            return;
        };
        if subscriber.transport.protect_rtcp(&mut packet).is_ok() {
            self.counters.datagrams_out += 1;
            self.counters.bytes_out += packet.len() as u64;
            self.control.push_back(Transmit {
                to,
                payload: BytesMut::from(&packet[..]),
            });
        }
    }

    fn subscribe(&mut self, subscriber: Index, publisher: Index, source: usize) {
        let Some((codec, red, track_id, publisher_id)) =
            self.participant(publisher).and_then(|p| {
                let s = p.sources.get(source)?;
                Some((
                    s.codec,
                    s.red_payload_type.is_some(),
                    s.track_id.clone(),
                    p.id.clone(),
                ))
            })
        else {
            return;
        };
        let ssrc = loop {
            let ssrc = self.rng.next_u32();
            if ssrc > 1 {
                break ssrc;
            }
        };
        let Some(participant) = self.participant_mut(subscriber) else {
            return;
        };
        if participant
            .subscriptions
            .iter()
            .any(|s| s.publisher == publisher && s.source == source)
        {
            return;
        }
        let mid = participant
            .negotiation
            .add_sending(codec, red, ssrc, &publisher_id, &track_id);
        participant.subscriptions.push(Subscription {
            publisher,
            source,
            mid,
            ssrc,
            track_id,
            active: false,
        });
        participant.renegotiate = true;
    }

    fn offer_if_needed(&mut self, index: Index) -> Result<(), CoreError> {
        let Some(participant) = self.participant_mut(index) else {
            return Ok(());
        };
        if !participant.renegotiate || participant.negotiation.offer_outstanding() {
            return Ok(());
        }
        let sdp = participant.negotiation.create_offer()?;
        participant.renegotiate = false;
        let signal = SignalOut::Offer {
            room: participant.room.clone(),
            to: participant.id.clone(),
            sdp,
        };
        self.signals.push_back(signal);
        Ok(())
    }

    /// One datagram from `from`. Unknown senders must open with a STUN request naming a
    /// participant's ufrag; anything else is dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += datagram.len() as u64;
        let known = self.by_addr.get(&from).copied();
        let index = match known {
            Some(index) => Some(index),
            None if classify(datagram) == DatagramKind::Stun => {
                stun_local_ufrag(datagram).and_then(|ufrag| self.by_ufrag.get(&ufrag).copied())
            }
            None => None,
        };
        let Some(index) = index else {
            self.counters.dropped += 1;
            return;
        };
        let Some(subscriber) = self.subscribers.get_mut(index).and_then(Option::as_mut) else {
            self.counters.dropped += 1;
            return;
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(datagram);
        let result = subscriber
            .transport
            .handle_datagram(now, from, &mut self.scratch);
        let closed = subscriber.transport.state() == TransportState::Closed;
        let inbound = match result {
            Ok(inbound) => inbound,
            Err(_) => {
                self.counters.dropped += 1;
                if closed {
                    self.flush(index);
                    self.remove(index, now);
                } else {
                    self.flush(index);
                }
                return;
            }
        };
        if known.is_none() {
            // Only an address that passed a check under our password is learned: the
            // transport answered it.
            self.by_addr.insert(from, index);
        }
        if let Some(participant) = self.participant_mut(index) {
            participant.last_heard = now;
        }
        match inbound {
            Inbound::Handled | Inbound::Connected => {}
            Inbound::Closed => {
                self.flush(index);
                self.remove(index, now);
                return;
            }
            Inbound::Rtp => self.handle_rtp(index, now),
            Inbound::Rtcp => self.handle_rtcp(index, now),
        }
        self.flush(index);
    }

    /// A decrypted RTP packet from a publisher, in `self.scratch`.
    fn handle_rtp(&mut self, index: Index, now: Instant) {
        let found = {
            let Some(participant) = self.participants.get_mut(index).and_then(Option::as_mut)
            else {
                return;
            };
            // Retransmissions come back as the packets they repair (late).
            if participant.receive.is_rtx(rtp_ssrc(&self.scratch))
                && !participant.receive.unwrap_rtx(&mut self.scratch)
            {
                return;
            }
            let Ok(view) = RtpView::parse(&self.scratch) else {
                self.counters.dropped += 1;
                return;
            };
            participant.layer_of.get(&view.ssrc()).copied()
        };
        let (source, layer) = match found {
            Some(found) => found,
            None => match self.open_layer(index) {
                Some(found) => found,
                None => return,
            },
        };
        self.forward(index, source, layer, now);
    }

    /// The first packet of an SSRC not seen before (in `self.scratch`): finds its section
    /// (by the SSRCs the SDP announced, then `sdes:mid`, then its payload type), its codec
    /// and its simulcast layer, and opens it; a new source is offered to the room.
    fn open_layer(&mut self, index: Index) -> Option<(usize, usize)> {
        let view = RtpView::parse(&self.scratch).ok()?;
        let participant = self.participants.get_mut(index).and_then(Option::as_mut)?;
        let ssrc = view.ssrc();
        let pt = view.payload_type();
        let by_ssrc = participant
            .sections
            .iter()
            .position(|s| s.ssrcs.iter().any(|(media, _)| *media == ssrc));
        let by_mid = || {
            participant.sections.iter().position(|s| {
                s.extensions
                    .mid
                    .and_then(|id| view.extension(id))
                    .is_some_and(|mid| mid == s.mid.as_bytes())
            })
        };
        let by_type = || {
            let matching: Vec<usize> = participant
                .sections
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.red_payload_type == Some(pt) || s.formats.iter().any(|f| f.payload_type == pt)
                })
                .map(|(i, _)| i)
                .collect();
            (matching.len() == 1).then(|| matching[0])
        };
        let Some(section) = by_ssrc.or_else(by_mid).or_else(by_type) else {
            note_unsupported(&mut participant.unsupported, ssrc, &mut self.counters);
            return None;
        };
        let section = participant.sections[section].clone();
        // A repair stream of a simulcast layer (browsers announce none in the SDP): RTX
        // of the layer its `repaired-rtp-stream-id` names.
        if let Some(repaired) = section
            .extensions
            .repaired_rid
            .and_then(|id| view.extension(id))
        {
            let rid = std::str::from_utf8(repaired).ok()?;
            let quality = rid_quality(rid);
            let (source, layer) = participant.sources.iter().enumerate().find_map(|(i, s)| {
                (s.mid == section.mid)
                    .then(|| {
                        s.layers
                            .iter()
                            .position(|l| l.quality == quality)
                            .map(|l| (i, l))
                    })
                    .flatten()
            })?;
            let media = &participant.sources[source];
            let media_ssrc = media.layers[layer].ssrc;
            let format = section.formats.iter().find(|f| f.codec == media.codec)?;
            participant.receive.bind(Stream {
                ssrc: media_ssrc,
                clock_rate: media.clock_rate(),
                nack: true,
                rtx: format.rtx_payload_type.map(|rtx| (ssrc, rtx)),
                payload_type: format.payload_type,
            });
            participant
                .receive
                .add_rtx(ssrc, media_ssrc, format.payload_type);
            participant
                .receive
                .unwrap_rtx(&mut self.scratch)
                .then_some((source, layer))?;
            return Some((source, layer));
        }
        let format = if section.red_payload_type == Some(pt) {
            section.formats.iter().find(|f| f.codec == Codec::Opus)
        } else {
            section.formats.iter().find(|f| f.payload_type == pt)
        };
        let Some(format) = format.copied() else {
            note_unsupported(&mut participant.unsupported, ssrc, &mut self.counters);
            return None;
        };
        let rid = section
            .extensions
            .rid
            .and_then(|id| view.extension(id))
            .and_then(|rid| std::str::from_utf8(rid).ok().map(str::to_owned));
        let quality = rid.as_deref().map_or(0, rid_quality);
        let rtx_ssrc = section
            .ssrcs
            .iter()
            .find(|(media, _)| *media == ssrc)
            .and_then(|(_, rtx)| *rtx);
        let video = section.kind == Kind::Video;
        participant.receive.bind(Stream {
            ssrc,
            clock_rate: format.codec.clock_rate(),
            nack: video,
            rtx: rtx_ssrc.zip(format.rtx_payload_type),
            payload_type: format.payload_type,
        });
        let layer = Layer {
            quality,
            ssrc,
            rate: RateMeter::default(),
            history: History::new(if video { VIDEO_HISTORY } else { AUDIO_HISTORY }),
            repair: Repair::default(),
            keyframe_requested: None,
        };
        // Another simulcast layer of a source already known (same m-line)?
        let sibling = rid.as_ref().and_then(|_| {
            participant
                .sources
                .iter()
                .position(|s| s.mid == section.mid)
        });
        if let Some(source) = sibling {
            let s = &mut participant.sources[source];
            s.layers.push(layer);
            s.layers.sort_by_key(|l| l.quality);
            for (i, l) in s.layers.iter().enumerate() {
                participant.layer_of.insert(l.ssrc, (source, i));
            }
            return participant.layer_of.get(&ssrc).copied();
        }
        let source = participant.sources.len();
        participant.sources.push(Source {
            mid: section.mid.clone(),
            kind: section.kind,
            codec: format.codec,
            red_payload_type: section.red_payload_type,
            extensions: section.extensions,
            layers: vec![layer],
            consumers: Vec::new(),
            track_id: format!("{}-{ssrc}", participant.id),
            announced: None,
            listener_loss: HashMap::default(),
            worst_loss: None,
        });
        participant.layer_of.insert(ssrc, (source, 0));
        let room = participant.room.clone();
        let others: Vec<Index> = self
            .participants
            .iter()
            .enumerate()
            .filter(|(other, p)| *other != index && p.as_ref().is_some_and(|p| p.room == room))
            .map(|(other, _)| other)
            .collect();
        for other in others {
            self.subscribe(other, index, source);
            let _ = self.offer_if_needed(other);
            self.flush(other);
        }
        self.announce_layers(&room);
        Some((source, 0))
    }

    /// Forwards the packet in `self.scratch` of `index`'s source and layer, then the
    /// packets its RED copies rebuild (audio its publisher's uplink lost).
    fn forward(&mut self, index: Index, source: usize, layer: usize, now: Instant) {
        let arrival = {
            let Some(participant) = self.participants.get_mut(index).and_then(Option::as_mut)
            else {
                return;
            };
            participant.receive.on_rtp(now, &self.scratch);
            let Some(s) = participant.sources.get_mut(source) else {
                return;
            };
            let Ok(view) = RtpView::parse(&self.scratch) else {
                return;
            };
            let l = &mut s.layers[layer];
            l.history.store(view.seq(), &self.scratch, now);
            if s.kind != Kind::Audio {
                None
            } else {
                let red = s.red_payload_type == Some(view.payload_type());
                let arrival =
                    l.repair
                        .on_packet(view.seq(), view.timestamp(), red.then(|| view.payload()));
                let level = s
                    .extensions
                    .audio_level
                    .and_then(|id| view.extension(id).map(|v| (id, v.to_vec())));
                let header = Header {
                    payload_type: view.payload_type(),
                    seq: 0,
                    timestamp: 0,
                    ssrc: view.ssrc(),
                    marker: false,
                };
                Some((arrival, level, header))
            }
        };
        let Some((arrival, level, header)) = arrival else {
            self.forward_one(index, source, layer, now, true);
            return;
        };
        let rebuilt = match arrival {
            Arrival::Superseded => {
                self.counters.red_superseded += 1;
                return;
            }
            Arrival::Forward(rebuilt) => rebuilt,
        };
        self.counters.red_rebuilt += rebuilt.len() as u64;
        // The packet first, then what its copies rebuilt: a receiver with RED has the
        // copies already, and times its buffer by in-order arrivals.
        self.forward_one(index, source, layer, now, true);
        let extensions: Vec<(u8, &[u8])> =
            level.iter().map(|(id, v)| (*id, v.as_slice())).collect();
        for packet in rebuilt {
            let header = Header {
                seq: packet.seq,
                timestamp: packet.timestamp,
                ..header
            };
            if write_forwarded(&mut self.rebuilt, header, &extensions, &packet.payload).is_err() {
                continue;
            }
            std::mem::swap(&mut self.scratch, &mut self.rebuilt);
            self.forward_one(index, source, layer, now, false);
            std::mem::swap(&mut self.scratch, &mut self.rebuilt);
        }
    }

    /// Forwards one packet (in `self.scratch`) to the source's consumers; `original`: it
    /// came from the publisher (it is tapped, counted in the layer's rate and its audio
    /// level heard). A rebuilt packet is not sent where last-N withholds its publisher.
    fn forward_one(
        &mut self,
        index: Index,
        source: usize,
        layer: usize,
        now: Instant,
        original: bool,
    ) {
        let last_n = self.last_n;
        let Some(room_id) = self.participant(index).map(|p| p.room.clone()) else {
            return;
        };
        let publishers = count_publishers(&self.participants, &room_id);
        let Ok(view) = RtpView::parse(&self.scratch) else {
            return;
        };
        let (kind, level) = {
            let Some(s) = self
                .participants
                .get_mut(index)
                .and_then(Option::as_mut)
                .and_then(|p| p.sources.get_mut(source))
            else {
                return;
            };
            if original {
                if let Some(tap) = self.payload_tap.as_mut()
                    && let Ok(packet) =
                        rtc::shared::marshal::Unmarshal::unmarshal(&mut &self.scratch[..])
                {
                    tap(&room_id, &packet);
                }
                s.layers[layer].rate.add(now, self.scratch.len());
            }
            let level = s
                .extensions
                .audio_level
                .and_then(|id| view.extension(id))
                .and_then(|level| level.first().copied());
            (s.kind, level)
        };
        let room = self.rooms.entry(room_id).or_default();
        if original && let Some(level) = level {
            room.speakers.update(&index, level & 0x7f, now);
        }
        // Last-N: in a big room only the loudest publishers' audio goes out. The set is
        // worked out again at most every LAST_N_REFRESH, never per packet.
        let withheld = kind == Kind::Audio && publishers > last_n && {
            if room
                .loudest_at
                .is_none_or(|at| now.saturating_duration_since(at) >= LAST_N_REFRESH)
            {
                room.loudest = room.speakers.loudest(last_n, now);
                room.loudest_at = Some(now);
            }
            !room.loudest.contains(&index)
        };
        let Some(s) = self
            .participants
            .get_mut(index)
            .and_then(Option::as_mut)
            .and_then(|p| p.sources.get_mut(source))
        else {
            return;
        };
        // Where decoding can start, from the dependency descriptor; `None` when the
        // publisher sends none (then layers switch at once).
        let keyframe = s
            .extensions
            .dependency_descriptor
            .and_then(|id| view.extension(id))
            .map(dd_keyframe_start);
        // A keyframe on a video layer: consumers of higher layers that went silent move
        // down to it now.
        if keyframe == Some(true) {
            let quality = s.layers[layer].quality;
            let silent: Vec<u32> = s
                .layers
                .iter()
                .filter(|l| l.quality > quality)
                .filter(|l| {
                    l.rate
                        .last_at()
                        .is_none_or(|at| now.saturating_duration_since(at) > LAYER_SILENT)
                })
                .map(|l| l.ssrc)
                .collect();
            if !silent.is_empty() {
                for consumer in &mut s.consumers {
                    if consumer.current.is_some_and(|c| silent.contains(&c)) {
                        consumer.target = Some(view.ssrc());
                    }
                }
            }
        }
        let packet = Packet {
            packet: view,
            extensions: &s.extensions,
            red: s.red_payload_type == Some(view.payload_type()),
            keyframe,
            clock_rate: s.clock_rate(),
            withheld,
            count_loss: s.kind == Kind::Video,
        };
        for lane in 0..self.lanes.count() {
            let share = Share {
                index: lane,
                count: self.lanes.count(),
            };
            let mut start = 0;
            loop {
                let done = fan_out_share(
                    now,
                    &packet,
                    &mut s.consumers,
                    start,
                    &mut self.subscribers,
                    self.lanes.current(lane),
                    share,
                );
                self.counters.forwarded += done.sent as u64;
                self.counters.forward_errors += done.failed as u64;
                match done.resume_at {
                    Some(at) => {
                        self.lanes.advance(lane);
                        start = at;
                    }
                    None => break,
                }
            }
        }
    }

    /// A decrypted RTCP compound packet from a participant, in `self.scratch`.
    fn handle_rtcp(&mut self, index: Index, now: Instant) {
        use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
        use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        use rtc::rtcp::receiver_report::ReceiverReport;
        use rtc::rtcp::sender_report::SenderReport;
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &self.scratch[..]) else {
            self.counters.dropped += 1;
            return;
        };
        let mut keyframes: Vec<u32> = Vec::new();
        let mut nacks: Vec<(u32, Vec<u16>)> = Vec::new();
        let mut blocks: Vec<ReceptionReport> = Vec::new();
        for packet in &packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                keyframes.push(pli.media_ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                keyframes.extend(fir.fir.iter().map(|entry| entry.ssrc));
            } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                blocks.extend(report.reports.iter().cloned());
            } else if let Some(report) = any.downcast_ref::<SenderReport>() {
                blocks.extend(report.reports.iter().cloned());
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let lost: Vec<u16> = nack
                    .nacks
                    .iter()
                    .flat_map(|pair| pair.packet_list())
                    .collect();
                nacks.push((nack.media_ssrc, lost));
            } else if let Some(feedback) = any.downcast_ref::<TransportLayerCc>()
                && let Some(subscriber) = self.subscribers.get_mut(index).and_then(Option::as_mut)
            {
                subscriber.send.on_feedback(feedback, now);
            }
        }
        if let Some(participant) = self.participant_mut(index) {
            participant.receive.on_rtcp(now, packets);
        }
        self.note_audio_loss(index, &blocks, now);
        self.counters.keyframe_requests += keyframes.len() as u64;
        for ssrc in keyframes {
            // The subscriber names the SSRC the SFU sends it; ask for the layer it gets
            // (or is about to).
            let Some((publisher, source)) = self.subscription_by_ssrc(index, ssrc) else {
                continue;
            };
            let layer = self
                .participant(publisher)
                .and_then(|p| p.sources.get(source))
                .and_then(|s| {
                    let consumer = s.consumers.iter().find(|c| c.subscriber == index);
                    consumer
                        .and_then(|c| c.current.or(c.target))
                        .or_else(|| s.layers.first().map(|l| l.ssrc))
                });
            if let Some(layer) = layer {
                self.request_keyframe(publisher, layer, now);
            }
        }
        for (ssrc, lost) in nacks {
            self.counters.nacks += 1;
            self.answer_nack(index, ssrc, &lost, now);
        }
    }

    /// The (publisher, source) a subscriber receives as `ssrc`.
    fn subscription_by_ssrc(&self, index: Index, ssrc: u32) -> Option<(Index, usize)> {
        self.participant(index)?
            .subscriptions
            .iter()
            .find(|s| s.ssrc == ssrc || s.ssrc.wrapping_add(1) == ssrc)
            .map(|s| (s.publisher, s.source))
    }

    /// Answers a NACK with RTX from the producer's history.
    fn answer_nack(&mut self, index: Index, ssrc: u32, lost: &[u16], now: Instant) {
        let Some((publisher, source)) = self.subscription_by_ssrc(index, ssrc) else {
            return;
        };
        if let Some(subscriber) = self.subscribers.get_mut(index).and_then(Option::as_mut) {
            for seq in lost {
                subscriber.loss.nacked(ssrc, *seq);
            }
        }
        let Some(s) = self
            .participants
            .get_mut(publisher)
            .and_then(Option::as_mut)
            .and_then(|p| p.sources.get_mut(source))
        else {
            return;
        };
        let Some(consumer) = s.consumers.iter_mut().find(|c| c.subscriber == index) else {
            return;
        };
        let Some(layer) = consumer
            .current
            .and_then(|current| s.layers.iter().find(|l| l.ssrc == current))
        else {
            return;
        };
        let Some(subscriber) = self.subscribers.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let lane = self.lanes.of(index);
        let mut remaining = lost;
        loop {
            let outbox = self.lanes.current(lane);
            let room = (super::fanout::OUTBOX_CAPACITY - outbox.len()).min(remaining.len());
            let (now_list, rest) = remaining.split_at(room);
            let done = retransmit(
                now,
                now_list,
                &layer.history,
                &s.extensions,
                RTX_MAX_AGE,
                consumer,
                subscriber,
                outbox,
            );
            self.counters.retransmissions_dropped += done.missed as u64;
            remaining = rest;
            if remaining.is_empty() {
                break;
            }
            self.lanes.advance(lane);
        }
    }

    /// A subscriber's report blocks: what it lost of the audio it receives. Each publisher
    /// hears, in the receiver reports the SFU sends it, the worst loss among the listeners
    /// of its audio (see `ReceiveSide::set_listener_loss`).
    fn note_audio_loss(&mut self, index: Index, blocks: &[ReceptionReport], now: Instant) {
        for block in blocks {
            let Some((publisher, source)) = self.subscription_by_ssrc(index, block.ssrc) else {
                continue;
            };
            let Some(p) = self.participant_mut(publisher) else {
                continue;
            };
            let Some(s) = p.sources.get_mut(source).filter(|s| s.kind == Kind::Audio) else {
                continue;
            };
            s.listener_loss.insert(index, (block.fraction_lost, now));
            // The worst report is worked out again when this one is worse than it, or
            // after LOSS_REFRESH: with thousands of listeners, going over all of them on
            // every report cost more than forwarding (5 % of the SFU at 1,000 listeners).
            let raise = s
                .worst_loss
                .is_none_or(|((fraction, _), _)| block.fraction_lost > fraction);
            let stale = s
                .worst_loss
                .is_none_or(|(_, at)| now.saturating_duration_since(at) >= LOSS_REFRESH);
            if !raise && !stale {
                continue;
            }
            let worst = s
                .listener_loss
                .values()
                .filter(|(_, at)| now.saturating_duration_since(*at) < LISTENER_LOSS_HOLD)
                .max_by_key(|(fraction, at)| (*fraction, *at))
                .copied();
            let Some((fraction, at)) = worst else {
                continue;
            };
            s.worst_loss = Some(((fraction, at), now));
            let ssrcs: Vec<u32> = s.layers.iter().map(|l| l.ssrc).collect();
            for ssrc in ssrcs {
                p.receive
                    .set_listener_loss(ssrc, fraction, at + LISTENER_LOSS_HOLD);
            }
        }
    }

    /// Moves a participant's transport datagrams and RTCP to the send queue and files its
    /// next deadline.
    fn flush(&mut self, index: Index) {
        let Some(subscriber) = self.subscribers.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        while let Some(transmit) = subscriber.transport.poll_transmit() {
            self.counters.datagrams_out += 1;
            self.counters.bytes_out += transmit.payload.len() as u64;
            self.control.push_back(Transmit {
                to: transmit.to,
                payload: BytesMut::from(&transmit.payload[..]),
            });
        }
        let mut rtcp = Vec::new();
        let due = {
            let Some(participant) = self.participants.get_mut(index).and_then(Option::as_mut)
            else {
                return;
            };
            // The receive side's reports start with the first packet; it needs `now`.
            let now = participant.last_heard;
            while let Some(packet) = participant.receive.poll_rtcp(now) {
                rtcp.push(packet);
            }
            let subscribed = participant.subscriptions.iter().any(|s| s.active);
            let allocation = subscribed.then_some(participant.next_allocation);
            let report = subscribed.then_some(participant.next_report);
            let transport = self.subscribers[index]
                .as_ref()
                .and_then(|s| s.transport.poll_timeout());
            [
                transport,
                participant.receive.poll_timeout(),
                allocation,
                report,
            ]
            .into_iter()
            .flatten()
            .min()
        };
        for packet in rtcp {
            self.send_rtcp(index, packet);
        }
        self.file_deadline(index, due);
    }

    fn file_deadline(&mut self, index: Index, due: Option<Instant>) {
        if let Some(old) = self.deadline_of.remove(&index) {
            self.deadlines.remove(&(old, index));
        }
        if let Some(due) = due {
            self.deadlines.insert((due, index));
            self.deadline_of.insert(index, due);
        }
    }

    /// The next datagram the transports themselves send (STUN, DTLS, RTCP); forwarded
    /// media waits in [`Sfu::media`].
    pub fn poll_control(&mut self) -> Option<Transmit> {
        self.control.pop_front()
    }

    /// The next datagram to send: the transports' own first, then forwarded media.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(transmit) = self.control.pop_front() {
            return Some(transmit);
        }
        let transmit = self.lanes.pop()?;
        self.counters.datagrams_out += 1;
        self.counters.bytes_out += transmit.payload.len() as u64;
        Some(transmit)
    }

    /// Send lanes: forwarded media is queued in this many lanes, a subscriber always in
    /// the same one, so that one worker per lane keeps each subscriber's packets in order
    /// ([`Sfu::swap_media`]). One unless set.
    pub fn lanes(&self) -> usize {
        self.lanes.count()
    }

    /// Outboxes holding forwarded media not yet handed over, in every lane (each holds up
    /// to 64 datagrams).
    pub fn queued_outboxes(&self) -> usize {
        self.lanes.used_outboxes()
    }

    /// Queues forwarded media in `count` lanes from now on (what is queued is dropped:
    /// set it before any traffic).
    pub fn set_lanes(&mut self, count: usize) {
        self.lanes = Lanes::new(count);
    }

    /// Trades `lane`'s filled outboxes for `spare` (emptied ones the driver sent, or
    /// none): the driver sends media without holding the core. Counts what it hands over
    /// as sent.
    pub fn swap_media(&mut self, lane: usize, spare: &mut Vec<Outbox>) {
        if lane >= self.lanes.count() {
            return;
        }
        let (datagrams, bytes) = self.lanes.swap(lane, spare);
        self.counters.datagrams_out += datagrams;
        self.counters.bytes_out += bytes;
    }

    /// The next signaling message to send.
    pub fn poll_signal(&mut self) -> Option<SignalOut> {
        self.signals.pop_front()
    }

    /// Everything the core wants done, one output at a time, as str0m's `poll_output`
    /// gives it: datagrams first (the transports' own, then forwarded media), then
    /// signaling, and last the time to call [`Sfu::handle_timeout`] (`None` inside when
    /// nothing is scheduled). A driver that sends media in batches uses
    /// [`Sfu::swap_media`] and [`Sfu::poll_control`] instead of the datagram outputs.
    pub fn poll_output(&mut self) -> Output {
        if let Some(transmit) = self.poll_transmit() {
            return Output::Transmit(transmit);
        }
        if let Some(signal) = self.poll_signal() {
            return Output::Signal(signal);
        }
        Output::Timeout(self.poll_timeout())
    }

    /// The earliest deadline of any participant, or of the next sweep for silent ones.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let first = self.deadlines.first().map(|(due, _)| *due);
        let sweep = self
            .next_sweep
            .filter(|_| self.participants.iter().any(Option::is_some));
        [first, sweep].into_iter().flatten().min()
    }

    /// Runs due timers; drops participants silent for [`LEG_TIMEOUT`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|sweep| now >= sweep) {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
            let silent: Vec<Index> = self
                .participants
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    p.as_ref()
                        .filter(|p| now.saturating_duration_since(p.last_heard) > LEG_TIMEOUT)
                        .map(|_| i)
                })
                .collect();
            for index in silent {
                self.remove(index, now);
            }
        }
        let mut due = Vec::new();
        while let Some(&(at, index)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.deadline_of.remove(&index);
            due.push(index);
        }
        for index in due {
            let closed = match self.subscribers.get_mut(index).and_then(Option::as_mut) {
                Some(subscriber) => {
                    let failed = subscriber.transport.handle_timeout(now).is_err();
                    failed || subscriber.transport.state() == TransportState::Closed
                }
                None => continue,
            };
            if closed {
                self.flush(index);
                self.remove(index, now);
                continue;
            }
            let mut rtcp = Vec::new();
            let (allocate, report) = match self.participant_mut(index) {
                Some(participant) => {
                    participant.receive.handle_timeout(now);
                    while let Some(packet) = participant.receive.poll_rtcp(now) {
                        rtcp.push(packet);
                    }
                    let report = participant.next_report <= now;
                    if report {
                        participant.next_report = now + REPORT_INTERVAL;
                    }
                    (participant.next_allocation <= now, report)
                }
                None => continue,
            };
            for packet in rtcp {
                self.send_rtcp(index, packet);
            }
            if report {
                self.send_reports(index, now);
            }
            if allocate {
                self.allocate(index, now);
                if let Some(participant) = self.participant_mut(index) {
                    participant.next_allocation = now + ALLOCATION_INTERVAL;
                }
            }
            self.flush(index);
        }
    }
}

/// What the core wants done ([`Sfu::poll_output`]).
#[derive(Debug)]
pub enum Output {
    /// A datagram to send.
    Transmit(Transmit),
    /// A signaling message to send.
    Signal(SignalOut),
    /// Nothing more for now: call [`Sfu::handle_timeout`] then (or wait for input).
    Timeout(Option<Instant>),
}

/// One video source a subscriber receives, as its allocation sees it: (publisher,
/// source), its layers as (quality, SSRC, bit/s), and the subscriber's consumer.
type VideoChoice = ((Index, usize), Vec<(u8, u32, u64)>, Option<Consumer>);

/// What a subscription change may read of its source.
struct SourceView {
    kind: Kind,
    layers: Vec<u32>,
}

/// An RTP packet's SSRC, or 0 when it is too short to have one.
fn rtp_ssrc(packet: &[u8]) -> u32 {
    packet
        .get(8..12)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Participants of `room` that publish anything.
fn count_publishers(participants: &[Option<Participant>], room: &str) -> usize {
    participants
        .iter()
        .flatten()
        .filter(|p| p.room == room && !p.sources.is_empty())
        .count()
}

/// Unsupported SSRCs remembered per participant: more are counted per packet as drops.
const MAX_UNSUPPORTED: usize = 64;

/// A packet of a published stream the SFU does not forward: the stream is counted once,
/// its later packets as drops.
fn note_unsupported(seen: &mut Vec<u32>, ssrc: u32, counters: &mut Counters) {
    if seen.contains(&ssrc) || seen.len() >= MAX_UNSUPPORTED {
        counters.dropped += 1;
    } else {
        seen.push(ssrc);
        counters.unsupported_streams += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_stream_is_counted_once_and_its_packets_as_drops() {
        let mut seen = Vec::new();
        let mut counters = Counters::default();
        for _ in 0..5 {
            note_unsupported(&mut seen, 7, &mut counters);
        }
        note_unsupported(&mut seen, 8, &mut counters);
        assert_eq!((counters.unsupported_streams, counters.dropped), (2, 4));
        // Invented SSRCs beyond the cap are drops, and the list stops growing.
        for ssrc in 100..300 {
            note_unsupported(&mut seen, ssrc, &mut counters);
        }
        assert_eq!(seen.len(), MAX_UNSUPPORTED);
        assert_eq!(counters.unsupported_streams, MAX_UNSUPPORTED as u64);
    }
}
