//! Sotto's selective forwarding unit. A sans-IO core ([`core`]: rooms, participants,
//! producers and consumers) on a media plane of its own: per participant a lean transport
//! (ICE-lite, DTLS with the keying material exported, SRTP/SRTCP in place: [`srtp`],
//! [`ice_lite`]) on the SFU's single UDP port ([`demux`] tells datagrams apart), RTCP
//! handled in the core, and a fan-out loop that writes each packet for every consumer into
//! reused buffers; a thin tokio driver moves bytes ([`driver`], `sendmmsg` batches);
//! [`control`] connects it to signaling. Forwarded: Opus (with RED: forwarded, stripped for
//! subscribers without it, and used to rebuild what a publisher's uplink lost, [`red`]; each
//! publisher hears its listeners' loss in its receiver reports), VP8 and H.264, with NACK
//! answered by RTX from one history per producer, keyframe requests relayed
//! (rate-limited), last-N audio and the dominant speaker, simulcast layers chosen per
//! subscriber from its bandwidth estimate, pause and resume. Not yet: bandwidth probing,
//! worker threads.
//! [`leg`] is the rtc peer connection the SFU ran before (kept for [`client`], a sans-IO
//! participant for tests and the load generator, and for the rtc-against-str0m bench).

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
