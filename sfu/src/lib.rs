//! Sotto's selective forwarding unit. A sans-IO core (rooms, participants, forwarding)
//! over one [`leg::Leg`] per participant, each an rtc peer connection in ICE-lite mode on
//! the SFU's single UDP port ([`demux`] tells datagrams apart); a thin tokio driver moves
//! bytes; [`control`] connects it to signaling. Forwarded: Opus (with RED: forwarded,
//! stripped for subscribers without it, and used to rebuild what a publisher's uplink lost,
//! [`red`]; each publisher hears its listeners' loss in its receiver reports), VP8 and
//! H.264, with NACK answered by RTX, keyframe requests relayed (rate-limited), last-N
//! audio and the dominant speaker, simulcast layers chosen per subscriber from its
//! bandwidth estimate, pause and resume. Not yet: bandwidth probing.
//! [`client`] is a sans-IO participant for tests and the load generator.

pub mod client;
pub mod control;
pub mod core;
pub mod demux;
pub mod driver;
pub mod http;
pub mod ice_lite;
pub mod layers;
pub mod leg;
pub mod red;
pub mod rewrite;
pub mod speaker;
pub mod srtp;
