//! Sotto's selective forwarding unit. A sans-IO core (rooms, participants, forwarding)
//! over one [`leg::Leg`] per participant, each an rtc peer connection in ICE-lite mode on
//! the SFU's single UDP port ([`demux`] tells datagrams apart); a thin tokio driver moves
//! bytes. Work in progress: legs, the demultiplexer, rooms with audio forwarding and the
//! UDP driver exist; NACK/RTX caching, simulcast, BWE and signaling control come next.

pub mod control;
pub mod core;
pub mod demux;
pub mod driver;
pub mod http;
pub mod leg;
pub mod rewrite;
pub mod speaker;
