//! The SFU's sans-IO core: rooms of participants, one [`Leg`] each, all on one UDP
//! address. Datagrams, signaling and ticks go in with `now`; datagrams to send, signaling
//! to send and the next deadline come out. Forwarding: every source a participant
//! publishes (an audio stream, or a video stream with up to three simulcast layers)
//! becomes one send track on every other leg in the room (an SFU-side offer renegotiates
//! it), and its RTP is written there, rewritten so each subscriber sees one continuous
//! stream ([`Rewriter`]). Per subscriber and source, a [`Forwarder`] picks the simulcast
//! layer from the subscriber's bandwidth estimate and the most it asked for, and switches
//! at keyframes. The core reads RTP headers and extensions only, never payloads.
//!
//! Who may be in which room is signaling's to say ([`Sfu::participant_joined`] /
//! [`Sfu::participant_left`], from its presence events); an offer from anyone else is
//! refused.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtp_transceiver::SSRC;

use crate::demux::{DatagramKind, classify, stun_local_ufrag};
use crate::layers::{
    Ceiling, DEPENDENCY_DESCRIPTOR_URI, LAYER_SILENT, LOSS_GRACE, LossMeter, RateMeter,
    choose_layer, dd_keyframe_start, loss_bound, rid_quality,
};
use crate::leg::{Codec, Leg, LegError, LegOutput, RED_PAYLOAD_TYPE, SendTrack, Transmit};
use crate::red::{Arrival, Repair};
use crate::rewrite::Rewriter;
use crate::speaker::SpeakerTracker;

pub mod fanout;
pub mod history;
pub mod receive;
pub mod rtp;
pub mod sdp;
pub mod send;
pub mod sfu;
pub use sfu::Sfu;
pub mod transport;

/// A participant, as signaling names it (its identity key, base64url).
pub type ParticipantId = String;
/// A room, as signaling names it.
pub type RoomId = String;

/// In rooms with more audio publishers than this, only the loudest this many are
/// forwarded (last-N); the default of [`Sfu::new`].
pub const DEFAULT_LAST_N: usize = 5;

/// How long a leg may take to connect, or stay silent, before it is dropped.
pub const LEG_TIMEOUT: Duration = Duration::from_secs(30);

/// How often legs are checked for [`LEG_TIMEOUT`].
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// At most one keyframe request per published stream in this long: every subscriber of a
/// stream may ask at once (a joining room, a lossy moment), and each keyframe costs the
/// publisher several times a delta frame's bits.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// How often each subscriber's layers are chosen again from its bandwidth estimate.
pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

/// A subscriber moves up at most one layer of a source this often.
pub const CLIMB_STEP: Duration = Duration::from_secs(2);

/// The budget assumed for a subscriber before its estimate arrives, bit/s.
const DEFAULT_BUDGET_BPS: u64 = 2_000_000;

/// How long a listener's report of its audio loss counts towards what its publisher hears
/// (reports come about once a second; a listener that left stops counting after this).
pub const LISTENER_LOSS_HOLD: Duration = Duration::from_secs(5);

/// The best simulcast layer (layers are ranked 0, 1, 2).
pub const TOP_QUALITY: u8 = 2;
/// Signaling the core wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalOut {
    /// An SFU-side offer (new streams to receive).
    Offer {
        /// The room (the `call_id`).
        room: RoomId,
        /// To whom.
        to: ParticipantId,
        /// The SDP.
        sdp: String,
    },
    /// Which simulcast layers of one of a publisher's video tracks anyone receives
    /// ("dynacast", PROTOCOL.md `layers`).
    Layers {
        /// The room.
        room: RoomId,
        /// The publisher.
        to: ParticipantId,
        /// Its media section.
        mid: String,
        /// The layer ranks someone receives, lowest first; empty for none.
        active: Vec<u8>,
    },
}

/// Why an offer or answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The sender is not in that room as far as signaling told us.
    #[error("not a participant of that room")]
    NotInRoom,
    /// No such forwarded track for that participant.
    #[error("no forwarded track {0}")]
    NoSuchTrack(String),
    /// An answer came with no offer outstanding.
    #[error("no offer is outstanding")]
    NoOffer,
    /// The leg refused.
    #[error(transparent)]
    Leg(#[from] LegError),
    /// The participant's SDP was refused.
    #[error(transparent)]
    Sdp(#[from] sdp::SdpError),
    /// The transport could not be set up.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams that matched no leg or were malformed.
    pub dropped: u64,
    /// RTP packets forwarded (one per subscriber).
    pub forwarded: u64,
    /// RTP packets that could not be written to a subscriber.
    pub forward_errors: u64,
    /// NACKs received from subscribers (each answered from the leg's packet cache).
    pub nacks: u64,
    /// Keyframe requests (PLI or FIR) received from subscribers.
    pub keyframe_requests: u64,
    /// Keyframe requests sent to publishers (after the rate limit).
    pub keyframe_requests_sent: u64,
    /// Published streams in a codec the SFU does not forward.
    pub unsupported_streams: u64,
    /// Retransmissions not sent: too old to be played, or over a quarter of the
    /// subscriber's estimate.
    pub retransmissions_dropped: u64,
    /// Audio packets lost on a publisher's uplink and rebuilt from the RED copies in a
    /// later packet.
    pub red_rebuilt: u64,
    /// Late originals of rebuilt packets, dropped.
    pub red_superseded: u64,
}

type LegId = u64;
/// A published source, named by the SSRC of the first of its layers the SFU saw.
type SourceId = SSRC;

/// A published source: one stream, or the simulcast layers of one m-line.
struct Source {
    codec: Codec,
    mid: Option<Arc<str>>,
    /// Its layers, (quality, SSRC).
    layers: Vec<(u8, SSRC)>,
}

/// What one subscriber gets of one source.
#[derive(Debug, Clone, Default)]
pub struct Forwarder {
    rewriter: Rewriter,
    /// The layer being forwarded.
    current: Option<SSRC>,
    /// The layer to switch to at its next keyframe.
    target: Option<SSRC>,
    /// The subscriber paused it.
    paused: bool,
    /// The best layer the subscriber wants (it may show the video small).
    max_quality: u8,
    /// When the bandwidth estimate last moved it up a layer.
    climbed_at: Option<Instant>,
}

impl Forwarder {
    fn new() -> Forwarder {
        Forwarder {
            max_quality: TOP_QUALITY,
            ..Forwarder::default()
        }
    }
}

struct Participant {
    room: RoomId,
    id: ParticipantId,
    leg: Leg,
    /// Every stream this participant publishes (each simulcast layer): its codec, source
    /// and quality.
    published: HashMap<SSRC, (Codec, SourceId, u8)>,
    /// The sources those streams make up.
    sources: HashMap<SourceId, Source>,
    /// Each published stream's bitrate.
    rates: HashMap<SSRC, RateMeter>,
    /// When a keyframe was last requested of each published stream.
    keyframe_requested: HashMap<SSRC, Instant>,
    /// What this participant receives: (publisher leg, source) → send track.
    subscriptions: HashMap<(LegId, SourceId), SendTrack>,
    /// Subscriptions in the outstanding offer, active once it is answered.
    offered: Vec<(LegId, SourceId)>,
    /// Subscriptions the participant has agreed to receive: only these are forwarded.
    active: BTreeSet<(LegId, SourceId)>,
    /// Per subscription: layer choice and rewriting.
    forwarders: HashMap<(LegId, SourceId), Forwarder>,
    /// When its layers are next chosen.
    next_allocation: Instant,
    /// The rate its link last failed to carry, held for a while.
    ceiling: Ceiling,
    /// The video it reports lost.
    loss: LossMeter,
    /// Its losses say nothing about its current rate until then (its layers just went
    /// down).
    loss_grace_until: Option<Instant>,
    /// Send tracks added since the last offer.
    renegotiate: bool,
    /// An SFU offer awaits its answer.
    offer_outstanding: bool,
    /// The header-extension id this participant gave the RFC 6464 audio level.
    audio_level_id: Option<u8>,
    /// The header-extension id this participant gave the dependency descriptor.
    dd_id: Option<u8>,
    /// The payload type this participant sends RED (RFC 2198) over Opus with.
    red_payload_type: Option<u8>,
    /// Per published audio stream: what rebuilds its lost packets from RED copies.
    repairs: HashMap<SSRC, Repair>,
    /// Per audio subscription: the share of its packets this participant last reported
    /// lost (RTCP `fraction_lost`: what the listener still misses of both hops, since the
    /// rewriting keeps the uplink losses the SFU could not rebuild as gaps), and when.
    audio_loss: HashMap<(LegId, SourceId), (u8, Instant)>,
    last_heard: Instant,
    /// The layers last announced for each of its video sources (`layers`).
    announced: HashMap<SourceId, Vec<u8>>,
}

/// The SFU core.
pub struct LegSfu {
    local_addr: SocketAddr,
    /// Who signaling says is in which room.
    members: HashMap<RoomId, BTreeSet<ParticipantId>>,
    participants: HashMap<LegId, Participant>,
    by_participant: HashMap<(RoomId, ParticipantId), LegId>,
    by_ufrag: HashMap<String, LegId>,
    by_addr: HashMap<SocketAddr, LegId>,
    next_leg: LegId,
    /// Loudness and the dominant speaker, per room.
    speakers: HashMap<RoomId, SpeakerTracker<LegId>>,
    /// Each leg's next deadline, ordered, and the reverse map to update it.
    deadlines: BTreeSet<(Instant, LegId)>,
    deadline_of: HashMap<LegId, Instant>,
    /// When silent legs are next looked for (set by the first leg, from its `now`).
    next_sweep: Option<Instant>,
    last_n: usize,
    transmits: VecDeque<Transmit>,
    signals: VecDeque<SignalOut>,
    counters: Counters,
    /// Sees every RTP payload that arrives for forwarding (see [`Sfu::set_payload_tap`]).
    payload_tap: Option<PayloadTap>,
}

/// A function shown each RTP packet the SFU receives for forwarding (decrypted from SRTP:
/// header and payload), with its room.
pub type PayloadTap = Box<dyn FnMut(&RoomId, &rtc::rtp::Packet) + Send>;

impl LegSfu {
    /// An SFU whose legs all use `local_addr` (the UDP socket's public address).
    pub fn new(local_addr: SocketAddr) -> LegSfu {
        LegSfu {
            local_addr,
            members: HashMap::new(),
            participants: HashMap::new(),
            by_participant: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            next_leg: 1,
            speakers: HashMap::new(),
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
            next_sweep: None,
            last_n: DEFAULT_LAST_N,
            transmits: VecDeque::new(),
            signals: VecDeque::new(),
            counters: Counters::default(),
            payload_tap: None,
        }
    }

    /// Shows `tap` every RTP packet this SFU receives for forwarding: exactly what a
    /// curious operator of the SFU could read. For tests that check media stays end-to-end
    /// encrypted (SFrame) on its way through; forwarding itself never reads payloads.
    pub fn set_payload_tap(&mut self, tap: Option<PayloadTap>) {
        self.payload_tap = tap;
    }

    /// Forward the audio of at most `n` publishers per room (the loudest; at least 1).
    pub fn set_last_n(&mut self, n: usize) {
        self.last_n = n.max(1);
    }

    /// The room's dominant speaker (by RFC 6464 levels), as its participant id.
    pub fn dominant_speaker(&self, room: &str) -> Option<ParticipantId> {
        let leg = self.speakers.get(room)?.dominant()?;
        self.participants.get(leg).map(|p| p.id.clone())
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        let mut counters = self.counters;
        counters.retransmissions_dropped += self
            .participants
            .values()
            .map(|p| p.leg.retransmissions_dropped())
            .sum::<u64>();
        counters
    }

    /// Participants with a leg, per room.
    pub fn legs_in(&self, room: &str) -> usize {
        self.participants
            .values()
            .filter(|p| p.room == room)
            .count()
    }

    /// Participants whose leg is up (ICE and DTLS), per room.
    pub fn connected_legs_in(&self, room: &str) -> usize {
        self.participants
            .values()
            .filter(|p| p.room == room && p.leg.is_connected())
            .count()
    }

    /// Signaling says `who` joined `room`.
    pub fn participant_joined(&mut self, room: &str, who: &str) {
        self.members
            .entry(room.to_owned())
            .or_default()
            .insert(who.to_owned());
    }

    /// Signaling says `who` left `room` (or disconnected): its leg goes and nobody
    /// receives its streams any more.
    pub fn participant_left(&mut self, room: &str, who: &str, now: Instant) {
        if let Some(members) = self.members.get_mut(room) {
            members.remove(who);
            if members.is_empty() {
                self.members.remove(room);
            }
        }
        if let Some(leg) = self
            .by_participant
            .remove(&(room.to_owned(), who.to_owned()))
        {
            self.remove_leg(leg, now);
        }
    }

    /// The participant hung up its media (it may stay in the room): its leg goes.
    pub fn end_leg(&mut self, room: &str, who: &str, now: Instant) {
        if let Some(leg) = self
            .by_participant
            .remove(&(room.to_owned(), who.to_owned()))
        {
            self.remove_leg(leg, now);
        }
    }

    /// Participants signaling has told us about, per room (for `/metrics`).
    pub fn room_sizes(&self) -> Vec<(RoomId, usize)> {
        self.members
            .iter()
            .map(|(room, members)| (room.clone(), members.len()))
            .collect()
    }

    fn remove_leg(&mut self, leg: LegId, _now: Instant) {
        let Some(gone) = self.participants.remove(&leg) else {
            return;
        };
        self.counters.retransmissions_dropped += gone.leg.retransmissions_dropped();
        self.file_deadline(leg, None);
        self.by_ufrag.retain(|_, id| *id != leg);
        self.by_addr.retain(|_, id| *id != leg);
        self.by_participant.retain(|_, id| *id != leg);
        // Subscribers stop receiving it. (The send tracks stay in their SDP until the
        // next renegotiation; nothing is written to them.)
        if let Some(speakers) = self.speakers.get_mut(&gone.room) {
            speakers.remove(&leg);
        }
        for other in self.participants.values_mut() {
            other.subscriptions.retain(|(from, _), _| *from != leg);
            other.active.retain(|(from, _)| *from != leg);
            other.forwarders.retain(|(from, _), _| *from != leg);
            other.offered.retain(|(from, _)| *from != leg);
        }
        self.announce_layers(&gone.room);
        tracing::debug!(room = %gone.room, "a leg was removed");
    }

    /// A participant's offer: creates its leg and returns the SFU's answer. Then, if
    /// others already publish, an SFU offer for their streams follows in
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
        let key = (room.to_owned(), from.to_owned());
        if let Some(old) = self.by_participant.remove(&key) {
            // A fresh offer replaces the participant's leg (a reconnect).
            self.remove_leg(old, now);
        }
        let mut leg = Leg::new(self.local_addr, now)?;
        self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
        let answer = leg.accept_offer(sdp, now)?;
        let id = self.next_leg;
        self.next_leg += 1;
        self.by_ufrag.insert(leg.local_ufrag().to_owned(), id);
        self.by_participant.insert(key, id);
        self.participants.insert(
            id,
            Participant {
                room: room.to_owned(),
                id: from.to_owned(),
                leg,
                published: HashMap::new(),
                sources: HashMap::new(),
                rates: HashMap::new(),
                keyframe_requested: HashMap::new(),
                subscriptions: HashMap::new(),
                offered: Vec::new(),
                active: BTreeSet::new(),
                forwarders: HashMap::new(),
                next_allocation: now,
                ceiling: Ceiling::default(),
                loss: LossMeter::default(),
                loss_grace_until: None,
                renegotiate: false,
                offer_outstanding: false,
                audio_level_id: extmap_id(sdp, rtc::sdp::extmap::AUDIO_LEVEL_URI),
                dd_id: extmap_id(sdp, DEPENDENCY_DESCRIPTOR_URI),
                red_payload_type: rtpmap_payload_type(sdp, "red/48000"),
                repairs: HashMap::new(),
                audio_loss: HashMap::new(),
                last_heard: now,
                announced: HashMap::new(),
            },
        );
        // Subscribe the newcomer to what the room already publishes.
        let publishers: Vec<(LegId, SourceId, Codec)> = self
            .participants
            .iter()
            .filter(|(other, p)| **other != id && p.room == room)
            .flat_map(|(other, p)| {
                p.sources
                    .iter()
                    .map(move |(source, s)| (*other, *source, s.codec))
            })
            .collect();
        for (publisher, source, codec) in publishers {
            self.subscribe(id, publisher, source, codec)?;
        }
        self.flush_pulls(id);
        self.offer_if_needed(id, now)?;
        Ok(answer)
    }

    /// A participant's answer to an SFU offer.
    pub fn handle_answer(
        &mut self,
        room: &str,
        from: &str,
        sdp: &str,
        now: Instant,
    ) -> Result<(), CoreError> {
        let id = *self
            .by_participant
            .get(&(room.to_owned(), from.to_owned()))
            .ok_or(CoreError::NotInRoom)?;
        let participant = self.participants.get_mut(&id).ok_or(CoreError::NotInRoom)?;
        if !participant.offer_outstanding {
            return Err(CoreError::NoOffer);
        }
        participant.offer_outstanding = false;
        participant.leg.accept_answer(sdp, now)?;
        let offered = std::mem::take(&mut participant.offered);
        participant.active.extend(offered.iter().copied());
        let room = participant.room.clone();
        // Choose the new subscriptions' layers now; each asks its publisher for a keyframe
        // (a new video subscriber can decode nothing before one).
        self.allocate(id, now);
        self.announce_layers(&room);
        self.flush_pulls(id);
        self.offer_if_needed(id, now)
    }

    /// Pauses (or resumes) a forwarded track for `who`: `track` is the track id of the
    /// send track as the participant's SDP names it (`a=msid:<stream> <track>`). A resumed
    /// track starts again at the next keyframe, continuing its sequence numbers.
    pub fn set_paused(
        &mut self,
        room: &str,
        who: &str,
        track: &str,
        paused: bool,
        now: Instant,
    ) -> Result<(), CoreError> {
        self.change_forwarder(room, who, track, now, |forwarder| {
            forwarder.paused = paused;
            forwarder.current = None;
            forwarder.target = None;
        })
    }

    /// The best simulcast layer (0 to [`TOP_QUALITY`]) `who` wants of a forwarded track (it
    /// shows the video small, say); the bandwidth estimate may choose a lower one.
    pub fn set_max_quality(
        &mut self,
        room: &str,
        who: &str,
        track: &str,
        quality: u8,
        now: Instant,
    ) -> Result<(), CoreError> {
        self.change_forwarder(room, who, track, now, |forwarder| {
            forwarder.max_quality = quality.min(TOP_QUALITY);
        })
    }

    /// Applies `change` to the forwarder of `who`'s subscription `track`, then chooses its
    /// layers again.
    fn change_forwarder(
        &mut self,
        room: &str,
        who: &str,
        track: &str,
        now: Instant,
        change: impl FnOnce(&mut Forwarder),
    ) -> Result<(), CoreError> {
        let (id, key) = self.subscription_by_track(room, who, track)?;
        if let Some(forwarder) = self
            .participants
            .get_mut(&id)
            .and_then(|p| p.forwarders.get_mut(&key))
        {
            change(forwarder);
        }
        self.allocate(id, now);
        self.announce_layers(room);
        Ok(())
    }

    /// Tells each publisher of `room` which layers of its tracks anyone receives, where
    /// that changed: for video, the ranks up to the largest any unpaused subscriber wants
    /// (whether or not the SFU has seen that layer yet; the estimate may still choose a
    /// lower one); for audio, its one layer (0) once anyone receives it; none without a
    /// subscriber.
    fn announce_layers(&mut self, room: &str) {
        let publishers: Vec<LegId> = self
            .participants
            .iter()
            .filter(|(_, p)| p.room == room)
            .map(|(id, _)| *id)
            .collect();
        for publisher in publishers {
            let Some(p) = self.participants.get(&publisher) else {
                continue;
            };
            let mut changes = Vec::new();
            for (source, s) in &p.sources {
                let Some(mid) = s.mid.as_deref() else {
                    continue;
                };
                let wanted = self
                    .participants
                    .iter()
                    .filter(|(id, sub)| {
                        **id != publisher && sub.active.contains(&(publisher, *source))
                    })
                    .filter_map(|(_, sub)| match sub.forwarders.get(&(publisher, *source)) {
                        Some(f) if f.paused => None,
                        Some(f) => Some(f.max_quality),
                        None => Some(TOP_QUALITY),
                    })
                    .max();
                // Audio has one layer: active while anyone receives it (a publisher's file
                // input waits for that).
                let top = wanted.map(|w| if s.codec == Codec::Opus { 0 } else { w });
                let active: Vec<u8> = top.map_or_else(Vec::new, |w| (0..=w).collect());
                if p.announced.get(source) != Some(&active) {
                    changes.push((*source, mid.to_owned(), active));
                }
            }
            let Some(p) = self.participants.get_mut(&publisher) else {
                continue;
            };
            for (source, mid, active) in changes {
                p.announced.insert(source, active.clone());
                self.signals.push_back(SignalOut::Layers {
                    room: p.room.clone(),
                    to: p.id.clone(),
                    mid,
                    active,
                });
            }
        }
    }

    /// The subscription of `who` that the SDP names `track` (`<publisher>-<source>`).
    fn subscription_by_track(
        &self,
        room: &str,
        who: &str,
        track: &str,
    ) -> Result<(LegId, (LegId, SourceId)), CoreError> {
        let id = *self
            .by_participant
            .get(&(room.to_owned(), who.to_owned()))
            .ok_or(CoreError::NotInRoom)?;
        let participant = self.participants.get(&id).ok_or(CoreError::NotInRoom)?;
        participant
            .subscriptions
            .keys()
            .find(|(publisher, source)| {
                self.participants
                    .get(publisher)
                    .is_some_and(|p| track_id(&p.id, *source) == track)
            })
            .map(|key| (id, *key))
            .ok_or_else(|| CoreError::NoSuchTrack(track.to_owned()))
    }

    /// Chooses the layer of every video source `id` receives, from its bandwidth estimate
    /// (audio is served first) and what it asked for; a new target layer is asked for a
    /// keyframe, and the forwarder switches when one arrives.
    fn allocate(&mut self, id: LegId, now: Instant) {
        let Some(participant) = self.participants.get(&id) else {
            return;
        };
        let estimate = participant.leg.estimate_bps().unwrap_or(DEFAULT_BUDGET_BPS);
        let mut audio_bps = 0;
        let keys: Vec<(LegId, SourceId)> = participant.active.iter().copied().collect();
        // Each source's layers and their rates, from the publishers.
        let mut video = Vec::new();
        for (publisher, source) in keys {
            let Some(p) = self.participants.get_mut(&publisher) else {
                continue;
            };
            let Some(s) = p.sources.get(&source) else {
                continue;
            };
            let video_source = s.codec != Codec::Opus;
            let layers: Vec<(u8, SSRC, u64)> = s
                .layers
                .iter()
                .map(|(quality, ssrc)| {
                    let bps = p.rates.get_mut(ssrc).map_or(0, |meter| {
                        // A stopped video layer is left at once; audio pauses in DTX.
                        if video_source {
                            meter.live_bps(now)
                        } else {
                            meter.bps(now)
                        }
                    });
                    (*quality, *ssrc, bps)
                })
                .collect();
            if s.codec == Codec::Opus {
                audio_bps += layers.iter().map(|l| l.2).sum::<u64>();
            } else {
                video.push(((publisher, source), layers));
            }
        }
        let mut keyframes = Vec::new();
        if let Some(participant) = self.participants.get_mut(&id) {
            // What is sent now: the audio and each unpaused video source's current layer.
            let video_bps: u64 = video
                .iter()
                .filter_map(|(key, layers)| {
                    let forwarder = participant.forwarders.get(key)?;
                    let current = forwarder.current.filter(|_| !forwarder.paused)?;
                    layers.iter().find(|l| l.1 == current).map(|l| l.2)
                })
                .sum();
            let allocated = audio_bps + video_bps;
            let lost = participant.loss.take().filter(|_| {
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
            for (key, layers) in video {
                let forwarder = participant
                    .forwarders
                    .entry(key)
                    .or_insert_with(Forwarder::new);
                if forwarder.paused {
                    continue;
                }
                let current = forwarder
                    .current
                    .and_then(|c| layers.iter().find(|l| l.1 == c))
                    .map(|l| l.0);
                let rates: Vec<(u8, u64)> = layers.iter().map(|l| (l.0, l.2)).collect();
                let Some(mut quality) = choose_layer(&rates, share, forwarder.max_quality, current)
                else {
                    continue;
                };
                // Up one layer at a time, and not again until the last climb had time to
                // show losses: the estimate may be far above what the link carries.
                if let Some(c) = current
                    && quality > c
                {
                    let climbed_lately = forwarder
                        .climbed_at
                        .is_some_and(|at| now.saturating_duration_since(at) < CLIMB_STEP);
                    if climbed_lately {
                        quality = c;
                    } else {
                        quality = c + 1;
                        forwarder.climbed_at = Some(now);
                    }
                }
                let Some(target) = layers.iter().find(|l| l.0 == quality).map(|l| l.1) else {
                    continue;
                };
                if current.is_some_and(|c| quality < c) {
                    participant.loss_grace_until = Some(now + LOSS_GRACE);
                }
                if forwarder.target != Some(target) {
                    tracing::debug!(
                        estimate,
                        ?lost,
                        budget,
                        from = ?current,
                        to = quality,
                        "a subscriber's layer changes"
                    );
                    forwarder.target = Some(target);
                }
                // Until the switch, ask again each time the last request may have been
                // lost (rate-limited per stream): a subscriber that has been sent nothing
                // yet never asks on its own, and one lost request used to leave a new
                // subscriber without video for a whole call at 5 % loss.
                if forwarder.current != Some(target) {
                    keyframes.push((key.0, target));
                }
            }
            participant.next_allocation = now + ALLOCATION_INTERVAL;
        }
        for (publisher, ssrc) in keyframes {
            self.request_keyframe(publisher, ssrc, now);
        }
        self.flush_pulls(id);
    }

    /// Asks a publisher for a keyframe on one of its video streams, at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`].
    fn request_keyframe(&mut self, publisher: LegId, ssrc: SSRC, now: Instant) {
        let Some(participant) = self.participants.get_mut(&publisher) else {
            return;
        };
        if participant
            .published
            .get(&ssrc)
            .is_none_or(|(codec, _, _)| *codec == Codec::Opus)
        {
            return;
        }
        if participant
            .keyframe_requested
            .get(&ssrc)
            .is_some_and(|last| now.saturating_duration_since(*last) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        if participant.leg.request_keyframe(ssrc, now).is_ok() {
            participant.keyframe_requested.insert(ssrc, now);
            self.counters.keyframe_requests_sent += 1;
        }
        self.flush_pulls(publisher);
    }

    /// RTCP a subscriber sent about the streams it receives: keyframe requests go to the
    /// publisher (rate-limited); NACKs were answered by the leg and are only counted.
    fn handle_feedback(
        &mut self,
        subscriber: LegId,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
        use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        use rtc::rtcp::receiver_report::ReceiverReport;
        use rtc::rtcp::sender_report::SenderReport;
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
        let mut wanted: Vec<SSRC> = Vec::new();
        for packet in packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                wanted.push(pli.media_ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                wanted.extend(fir.fir.iter().map(|entry| entry.ssrc));
            } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                self.note_audio_loss(subscriber, &report.reports, now);
            } else if let Some(report) = any.downcast_ref::<SenderReport>() {
                self.note_audio_loss(subscriber, &report.reports, now);
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                self.counters.nacks += 1;
                if let Some(participant) = self.participants.get_mut(&subscriber) {
                    for pair in &nack.nacks {
                        for seq in pair.packet_list() {
                            participant.loss.nacked(nack.media_ssrc, seq);
                        }
                    }
                }
            }
        }
        let Some(participant) = self.participants.get(&subscriber) else {
            return;
        };
        // The subscriber names the SSRC the SFU sends it; map it back to the source, and
        // ask for the layer it gets (or is about to).
        let sources: Vec<(LegId, SSRC)> = wanted
            .iter()
            .filter_map(|ssrc| {
                let (key, _) = participant
                    .subscriptions
                    .iter()
                    .find(|(_, track)| track.ssrc == *ssrc)?;
                let forwarder = participant.forwarders.get(key);
                let layer = forwarder
                    .and_then(|f| f.current.or(f.target))
                    .unwrap_or(key.1);
                Some((key.0, layer))
            })
            .collect();
        self.counters.keyframe_requests += wanted.len() as u64;
        for (publisher, ssrc) in sources {
            self.request_keyframe(publisher, ssrc, now);
        }
    }

    /// A subscriber's report blocks: what it lost of the audio it receives. Each
    /// publisher hears, in the receiver reports the SFU sends it, the worst loss among the
    /// listeners of its audio (and its own uplink's, when that is worse), so that its
    /// encoder sizes FEC and RED for the path its audio really takes. The SFU rebuilds
    /// uplink losses from the copies and forwards RED as it came, so the publisher's
    /// redundancy covers both hops.
    fn note_audio_loss(&mut self, subscriber: LegId, blocks: &[ReceptionReport], now: Instant) {
        let Some(participant) = self.participants.get_mut(&subscriber) else {
            return;
        };
        let mut changed = Vec::new();
        for block in blocks {
            let Some((key, _)) = participant
                .subscriptions
                .iter()
                .find(|(_, track)| track.ssrc == block.ssrc && track.codec() == Codec::Opus)
            else {
                continue;
            };
            participant
                .audio_loss
                .insert(*key, (block.fraction_lost, now));
            changed.push(*key);
        }
        for (publisher, source) in changed {
            // The worst current report holds for as long as that report counts.
            let worst = self
                .participants
                .values()
                .filter_map(|p| p.audio_loss.get(&(publisher, source)))
                .filter(|(_, at)| now.saturating_duration_since(*at) < LISTENER_LOSS_HOLD)
                .max_by_key(|(fraction, at)| (*fraction, *at))
                .copied();
            if let (Some((fraction, at)), Some(publisher)) =
                (worst, self.participants.get_mut(&publisher))
            {
                publisher
                    .leg
                    .set_listener_loss(source, fraction, at + LISTENER_LOSS_HOLD);
            }
        }
    }

    fn subscribe(
        &mut self,
        subscriber: LegId,
        publisher: LegId,
        source: SourceId,
        codec: Codec,
    ) -> Result<(), CoreError> {
        let Some(publisher_id) = self.participants.get(&publisher).map(|p| p.id.clone()) else {
            return Ok(());
        };
        let Some(participant) = self.participants.get_mut(&subscriber) else {
            return Ok(());
        };
        if participant.subscriptions.contains_key(&(publisher, source)) {
            return Ok(());
        }
        let track = participant.leg.add_send_track_with_codec(
            codec,
            &publisher_id,
            &track_id(&publisher_id, source),
            rand::random(),
        )?;
        participant.subscriptions.insert((publisher, source), track);
        participant
            .forwarders
            .insert((publisher, source), Forwarder::new());
        participant.renegotiate = true;
        Ok(())
    }

    fn offer_if_needed(&mut self, id: LegId, now: Instant) -> Result<(), CoreError> {
        let Some(participant) = self.participants.get_mut(&id) else {
            return Ok(());
        };
        if !participant.renegotiate || participant.offer_outstanding {
            return Ok(());
        }
        let sdp = participant.leg.create_offer(now)?;
        participant.offered = participant
            .subscriptions
            .keys()
            .filter(|key| !participant.active.contains(key))
            .copied()
            .collect();
        participant.renegotiate = false;
        participant.offer_outstanding = true;
        self.signals.push_back(SignalOut::Offer {
            room: participant.room.clone(),
            to: participant.id.clone(),
            sdp,
        });
        self.flush_pulls(id);
        Ok(())
    }

    /// One datagram from `from`. Unknown senders must open with a STUN request naming a
    /// leg's ufrag; anything else is dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += datagram.len() as u64;
        let leg = match self.by_addr.get(&from) {
            Some(leg) => Some(*leg),
            None if classify(datagram) == DatagramKind::Stun => {
                stun_local_ufrag(datagram).and_then(|ufrag| self.by_ufrag.get(&ufrag).copied())
            }
            None => None,
        };
        let Some(id) = leg else {
            self.counters.dropped += 1;
            return;
        };
        let known = self.by_addr.contains_key(&from);
        let Some(participant) = self.participants.get_mut(&id) else {
            self.counters.dropped += 1;
            return;
        };
        if participant
            .leg
            .handle_datagram(now, from, datagram)
            .is_err()
        {
            self.counters.dropped += 1;
        }
        if !known {
            // The 5-tuple is learned only when the leg accepted the request: it answers an
            // authenticated binding request with a success response to that address. A
            // request with the wrong password (a guessed or stolen ufrag) gets none, and
            // its sender stays a stranger whose datagrams are dropped here.
            let queued = self.transmits.len();
            self.flush_pulls(id);
            let accepted = self
                .transmits
                .iter()
                .skip(queued)
                .any(|t| t.to == from && t.payload.starts_with(&[0x01, 0x01]));
            if !accepted {
                self.counters.dropped += 1;
                return;
            }
            self.by_addr.insert(from, id);
        }
        if let Some(participant) = self.participants.get_mut(&id) {
            participant.last_heard = now;
        }
        self.process(id, now);
    }

    /// Moves a leg's outputs: connection state, new streams (subscribe the room), RTP
    /// (forward).
    fn process(&mut self, id: LegId, now: Instant) {
        loop {
            let Some(participant) = self.participants.get_mut(&id) else {
                return;
            };
            let Some(output) = participant.leg.poll_output() else {
                break;
            };
            match output {
                // Connection blips are not acted on: the leg times out if it stays away.
                LegOutput::Connected | LegOutput::Disconnected => {}
                LegOutput::Rtcp { packets } => self.handle_feedback(id, &packets, now),
                LegOutput::Closed => {
                    self.flush_pulls(id);
                    self.remove_leg(id, now);
                    return;
                }
                LegOutput::TrackOpened {
                    ssrc,
                    codec,
                    mid,
                    rid,
                    ..
                } => {
                    let Some(codec) = codec else {
                        self.counters.unsupported_streams += 1;
                        continue;
                    };
                    let quality = rid.as_deref().map_or(0, rid_quality);
                    // Another simulcast layer of a source already known (same m-line)?
                    let sibling = rid.as_ref().and_then(|_| {
                        participant
                            .sources
                            .iter()
                            .find(|(_, s)| mid.is_some() && s.mid == mid)
                            .map(|(source, _)| *source)
                    });
                    if let Some(source) = sibling {
                        participant.published.insert(ssrc, (codec, source, quality));
                        if let Some(s) = participant.sources.get_mut(&source) {
                            s.layers.push((quality, ssrc));
                            s.layers.sort_unstable();
                        }
                        continue;
                    }
                    participant.published.insert(ssrc, (codec, ssrc, quality));
                    participant.sources.insert(
                        ssrc,
                        Source {
                            codec,
                            mid,
                            layers: vec![(quality, ssrc)],
                        },
                    );
                    let room = participant.room.clone();
                    let subscribers: Vec<LegId> = self
                        .participants
                        .iter()
                        .filter(|(other, p)| **other != id && p.room == room)
                        .map(|(other, _)| *other)
                        .collect();
                    for subscriber in subscribers {
                        if self.subscribe(subscriber, id, ssrc, codec).is_ok() {
                            let _ = self.offer_if_needed(subscriber, now);
                        }
                    }
                    self.announce_layers(&room);
                }
                LegOutput::Rtp { packet, .. } => self.forward(id, packet, now),
            }
        }
        self.flush_pulls(id);
    }

    /// A publisher's RTP packet, then the packets its RED copies rebuild (audio lost on
    /// the publisher's uplink; see [`crate::red`]), each forwarded to the room.
    fn forward(&mut self, from: LegId, packet: rtc::rtp::Packet, now: Instant) {
        let ssrc = packet.header.ssrc;
        let Some(publisher) = self.participants.get_mut(&from) else {
            return;
        };
        if publisher
            .published
            .get(&ssrc)
            .is_some_and(|(codec, _, _)| *codec == Codec::Opus)
        {
            let red = Some(packet.header.payload_type) == publisher.red_payload_type;
            let arrival = publisher.repairs.entry(ssrc).or_default().on_packet(
                packet.header.sequence_number,
                packet.header.timestamp,
                red.then_some(&packet.payload[..]),
            );
            tracing::trace!(target: "sotto_sfu::forward", ssrc, seq = packet.header.sequence_number,
                red, rebuilt = ?match &arrival {
                    Arrival::Forward(rebuilt) => rebuilt.iter().map(|r| r.seq).collect(),
                    Arrival::Superseded => Vec::new(),
                }, superseded = matches!(arrival, Arrival::Superseded), "audio from a publisher");
            match arrival {
                Arrival::Superseded => {
                    self.counters.red_superseded += 1;
                    return;
                }
                Arrival::Forward(rebuilt) => {
                    // The packet first, then what its copies rebuilt: a receiver with RED
                    // has the copies already, and times its buffer by in-order arrivals.
                    self.counters.red_rebuilt += rebuilt.len() as u64;
                    let header = packet.header.clone();
                    self.forward_packet(from, packet, now);
                    for rebuilt in rebuilt {
                        let mut header = header.clone();
                        header.sequence_number = rebuilt.seq;
                        header.timestamp = rebuilt.timestamp;
                        header.marker = false;
                        let payload = bytes::Bytes::from(rebuilt.payload);
                        self.forward_rebuilt(from, rtc::rtp::Packet { header, payload }, now);
                    }
                    return;
                }
            }
        }
        self.forward_packet(from, packet, now);
    }

    /// A packet the SFU rebuilt, older than the one just forwarded: to the same
    /// subscribers, unless last-N just withheld that one (a withheld packet shifts the
    /// subscriber's numbering, which only a packet newer than all before may do), and
    /// without counting towards loudness or rate (the newer packet did).
    fn forward_rebuilt(&mut self, from: LegId, packet: rtc::rtp::Packet, now: Instant) {
        let Some(room) = self.participants.get(&from).map(|p| p.room.clone()) else {
            return;
        };
        if self.withheld_by_last_n(&room, from, now) {
            return;
        }
        self.forward_packet_as(from, packet, now, false);
    }

    fn forward_packet(&mut self, from: LegId, packet: rtc::rtp::Packet, now: Instant) {
        self.forward_packet_as(from, packet, now, true);
    }

    /// Forwards one packet; `original`: it came from the publisher (it is tapped, counted
    /// in the stream's rate and its audio level heard).
    fn forward_packet_as(
        &mut self,
        from: LegId,
        packet: rtc::rtp::Packet,
        now: Instant,
        original: bool,
    ) {
        let ssrc = packet.header.ssrc;
        let Some(publisher) = self.participants.get_mut(&from) else {
            return;
        };
        let Some(&(codec, source, _)) = publisher.published.get(&ssrc) else {
            return;
        };
        // The SFU's own payload types from here on: RED or the codec's.
        let red =
            codec == Codec::Opus && Some(packet.header.payload_type) == publisher.red_payload_type;
        if original {
            if let Some(tap) = self.payload_tap.as_mut() {
                tap(&publisher.room, &packet);
            }
            publisher.rates.entry(ssrc).or_default().add(
                now,
                packet.payload.len()
                    + rtc::shared::marshal::MarshalSize::marshal_size(&packet.header),
            );
        }
        // Where decoding can start, from the dependency descriptor; `None` when the
        // publisher does not send one (then layers switch at once, and the subscriber's
        // decoder waits for the keyframe its switch asked for).
        let keyframe = publisher
            .dd_id
            .and_then(|id| packet.header.get_extension(id))
            .map(|descriptor| dd_keyframe_start(&descriptor));
        // Loudness from the audio-level extension (the payload is never read), then
        // last-N: in a big room only the loudest publishers' audio goes out.
        let room = publisher.room.clone();
        let level_ext = publisher
            .audio_level_id
            .and_then(|id| packet.header.get_extension(id));
        if original && let Some(level) = level_ext.as_ref().and_then(|ext| ext.first().copied()) {
            self.speakers
                .entry(room.clone())
                .or_default()
                .update(&from, level & 0x7f, now);
        }
        if self.withheld_by_last_n(&room, from, now) {
            for participant in self.participants.values_mut() {
                if participant.active.contains(&(from, source))
                    && let Some(forwarder) = participant.forwarders.get_mut(&(from, source))
                    && forwarder.current == Some(ssrc)
                {
                    forwarder.rewriter.withhold(packet.header.sequence_number);
                }
            }
            return;
        }
        // A keyframe on a video layer: the higher layers of its source that went silent,
        // whose subscribers move down to it now.
        let silent_above: Vec<SSRC> = match (keyframe, self.participants.get(&from)) {
            (Some(true), Some(publisher)) => publisher
                .sources
                .get(&source)
                .map(|s| {
                    let quality = s.layers.iter().find(|l| l.1 == ssrc).map_or(0, |l| l.0);
                    s.layers
                        .iter()
                        .filter(|l| l.0 > quality)
                        .filter(|l| {
                            publisher
                                .rates
                                .get(&l.1)
                                .and_then(RateMeter::last_at)
                                .is_none_or(|at| now.saturating_duration_since(at) > LAYER_SILENT)
                        })
                        .map(|l| l.1)
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let targets: Vec<(LegId, SendTrack)> = self
            .participants
            .iter()
            .filter(|(_, p)| p.active.contains(&(from, source)))
            .filter_map(|(id, p)| p.subscriptions.get(&(from, source)).map(|t| (*id, *t)))
            .collect();
        for (id, track) in targets {
            let Some(participant) = self.participants.get_mut(&id) else {
                continue;
            };
            if !participant.leg.can_send() {
                continue;
            }
            let forwarder = participant
                .forwarders
                .entry((from, source))
                .or_insert_with(Forwarder::new);
            if forwarder.paused {
                continue;
            }
            if forwarder
                .current
                .is_some_and(|current| silent_above.contains(&current))
            {
                forwarder.target = Some(ssrc);
            }
            if forwarder.current != Some(ssrc) {
                // Audio has one layer and starts at once; video switches to its target
                // layer where a keyframe starts (or at once, without a descriptor).
                let target = if codec == Codec::Opus {
                    Some(ssrc)
                } else {
                    forwarder.target
                };
                if target != Some(ssrc) || keyframe == Some(false) {
                    continue;
                }
                forwarder.rewriter.switch(
                    packet.header.sequence_number,
                    packet.header.timestamp,
                    now,
                    codec.clock_rate(),
                );
                forwarder.current = Some(ssrc);
            }
            let Some((seq, ts)) = forwarder.rewriter.rewrite(
                packet.header.sequence_number,
                packet.header.timestamp,
                now,
            ) else {
                tracing::trace!(target: "sotto_sfu::forward", ssrc, seq = packet.header.sequence_number,
                    to = ?id, "not rewritten");
                continue;
            };
            let mut outgoing = packet.clone();
            outgoing.header.sequence_number = seq;
            outgoing.header.timestamp = ts;
            outgoing.header.payload_type = if red {
                RED_PAYLOAD_TYPE
            } else {
                codec.payload_type()
            };
            // Header extensions are per leg: the publisher's ids mean nothing on the
            // subscriber's leg, and its transport-wide sequence numbers belong to the
            // publisher's leg. Drop them all and carry the audio level over under the
            // subscriber's own id.
            outgoing.header.extension = false;
            outgoing.header.extension_profile = 0;
            outgoing.header.extensions.clear();
            outgoing.header.extensions_padding = 0;
            if let (Some(id), Some(level)) = (participant.audio_level_id, level_ext.clone()) {
                outgoing.header.extension = true;
                outgoing.header.extension_profile = 0xBEDE;
                let _ = outgoing.header.set_extension(id, level);
            }
            match participant.leg.write_rtp(track, outgoing, now) {
                Ok(()) => {
                    self.counters.forwarded += 1;
                    // Only what really went out can be lost on the way.
                    if codec != Codec::Opus {
                        participant.loss.sent(track.ssrc, seq);
                    }
                }
                Err(_) => self.counters.forward_errors += 1,
            }
            self.flush_pulls(id);
        }
    }

    /// Whether last-N keeps `from`'s audio back now: the room has more publishers than
    /// that, and `from` is not among the loudest.
    fn withheld_by_last_n(&self, room: &str, from: LegId, now: Instant) -> bool {
        self.speakers.get(room).is_some_and(|speakers| {
            self.publishers_in(room) > self.last_n
                && !speakers.loudest(self.last_n, now).contains(&from)
        })
    }

    fn publishers_in(&self, room: &str) -> usize {
        self.participants
            .values()
            .filter(|p| p.room == room && !p.sources.is_empty())
            .count()
    }

    /// Moves a leg's datagrams to the send queue and files its next deadline. Every
    /// path that touches a leg ends here, so the deadlines stay current without asking
    /// every leg on every datagram (which cost O(legs) per packet: about a fifth of the
    /// CPU with 300 subscribers, before this).
    fn flush_pulls(&mut self, id: LegId) {
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        while let Some(transmit) = participant.leg.poll_transmit() {
            self.counters.datagrams_out += 1;
            self.counters.bytes_out += transmit.payload.len() as u64;
            self.transmits.push_back(transmit);
        }
        let allocation = (!participant.active.is_empty()).then_some(participant.next_allocation);
        let due = [participant.leg.poll_timeout(), allocation]
            .into_iter()
            .flatten()
            .min();
        self.file_deadline(id, due);
    }

    fn file_deadline(&mut self, id: LegId, due: Option<Instant>) {
        if let Some(old) = self.deadline_of.remove(&id) {
            self.deadlines.remove(&(old, id));
        }
        if let Some(due) = due {
            self.deadlines.insert((due, id));
            self.deadline_of.insert(id, due);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next signaling message to send.
    pub fn poll_signal(&mut self) -> Option<SignalOut> {
        self.signals.pop_front()
    }

    /// The earliest deadline of any leg or layer allocation, or of the next sweep for
    /// silent legs.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let first = self.deadlines.first().map(|(due, _)| *due);
        let sweep = self.next_sweep.filter(|_| !self.participants.is_empty());
        [first, sweep].into_iter().flatten().min()
    }

    /// Runs due timers; drops legs silent for [`LEG_TIMEOUT`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|sweep| now >= sweep) {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
            let silent: Vec<LegId> = self
                .participants
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.last_heard) > LEG_TIMEOUT)
                .map(|(id, _)| *id)
                .collect();
            for id in silent {
                self.remove_leg(id, now);
            }
        }
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.deadline_of.remove(&id);
            due.push(id);
        }
        for id in due {
            let Some(participant) = self.participants.get_mut(&id) else {
                continue;
            };
            if participant.leg.poll_timeout().is_some_and(|due| due <= now) {
                let _ = participant.leg.handle_timeout(now);
            }
            let allocate = participant.next_allocation <= now;
            self.process(id, now);
            if allocate {
                self.allocate(id, now);
            }
            self.flush_pulls(id);
        }
    }
}

/// The id a participant's SDP gives a header extension (`a=extmap:N <uri>`).
pub(crate) fn extmap_id(sdp: &str, wanted: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=extmap:")?;
        let (id, uri) = rest.split_once(' ')?;
        let id: u8 = id.split('/').next()?.parse().ok()?;
        (uri.split_whitespace().next()? == wanted && (1..=14).contains(&id)).then_some(id)
    })
}

/// The payload type a participant's SDP gives an encoding (`a=rtpmap:N <encoding>/...`,
/// `encoding` as `name/rate`, case-insensitive), the first if several.
pub(crate) fn rtpmap_payload_type(sdp: &str, encoding: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=rtpmap:")?;
        let (pt, format) = rest.split_once(' ')?;
        let format = format.trim().as_bytes();
        let matches = format
            .get(..encoding.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(encoding.as_bytes()))
            && matches!(format.get(encoding.len()), None | Some(b'/'));
        matches
            .then(|| pt.parse::<u8>().ok())
            .flatten()
            .filter(|pt| *pt < 128)
    })
}

/// The track id of a forwarded source in subscribers' SDP (`a=msid:<publisher> <this>`).
fn track_id(publisher: &str, source: SourceId) -> String {
    format!("{publisher}-{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpmap_payload_types_are_read_from_any_bytes() {
        let sdp = "m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=rtpmap:111 opus/48000/2\r\n\
                   a=rtpmap:63 RED/48000/2\r\n";
        assert_eq!(rtpmap_payload_type(sdp, "red/48000"), Some(63));
        assert_eq!(rtpmap_payload_type(sdp, "opus/48000"), Some(111));
        assert_eq!(rtpmap_payload_type(sdp, "red/4800"), None);
        // Multi-byte characters where the name would end: no panic, no match.
        assert_eq!(
            rtpmap_payload_type("a=rtpmap:63 red/4800é/2\r\n", "red/48000"),
            None
        );
        assert_eq!(rtpmap_payload_type("a=rtpmap:63 ré\r\n", "red/48000"), None);
        assert_eq!(
            rtpmap_payload_type("a=rtpmap:200 red/48000\r\n", "red/48000"),
            None
        );
    }
}
