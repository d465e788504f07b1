//! The SFU's sans-IO core, on a media plane of its own (issue 19): rooms of participants,
//! each with its own transport ([`transport`]: ICE-lite, DTLS, SRTP in place) and SDP
//! ([`sdp`]), all on one UDP address. Datagrams, signaling and ticks go in with `now`;
//! datagrams to send, signaling to send and the next deadline come out ([`Sfu`]).
//!
//! Named as the field names them: a participant's published stream is a producer (a
//! source with its simulcast layers), each subscriber's copy of it a consumer
//! ([`fanout::Consumer`]), and one packet goes to all consumers of its producer in one
//! pass ([`fanout::fan_out`]): header rewrite, extensions under the subscriber's ids, SRTP
//! in place into reused buffers the driver sends with `sendmmsg`. RTCP is handled here,
//! not in per-participant interceptor chains: what publishers are owed
//! ([`receive`]), NACKs answered with RTX from one history per producer ([`history`]),
//! and each subscriber's bandwidth estimate ([`send`]). The core reads RTP headers and
//! extensions only, never payloads.
//!
//! Who may be in which room is signaling's to say ([`Sfu::participant_joined`] /
//! [`Sfu::participant_left`], from its presence events); an offer from anyone else is
//! refused.

use std::time::Duration;

use crate::leg::LegError;

pub mod fanout;
pub mod history;
mod lanes;
pub mod receive;
pub mod rtp;
pub mod sdp;
pub mod send;
pub mod sfu;
pub use sfu::{Output, Sfu};
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

/// At most one keyframe request per published stream in this long: every subscriber of a
/// stream may ask at once (a joining room, a lossy moment), and each keyframe costs the
/// publisher several times a delta frame's bits.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// How often each subscriber's layers are chosen again from its bandwidth estimate.
pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

/// A subscriber moves up at most one layer of a source this often.
pub const CLIMB_STEP: Duration = Duration::from_secs(2);

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
    /// Sender reports sent to subscribers (one per forwarded stream and interval).
    pub sender_reports: u64,
}

/// A function shown each RTP packet the SFU receives for forwarding (decrypted from SRTP:
/// header and payload), with its room.
pub type PayloadTap = Box<dyn FnMut(&RoomId, &rtc::rtp::Packet) + Send>;

/// The id a participant's SDP gives a header extension (`a=extmap:N <uri>`).
pub(crate) fn extmap_id(sdp: &str, wanted: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=extmap:")?;
        let (id, uri) = rest.split_once(' ')?;
        let id: u8 = id.split('/').next()?.parse().ok()?;
        (uri.split_whitespace().next()? == wanted && (1..=14).contains(&id)).then_some(id)
    })
}
