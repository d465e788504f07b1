//! Sotto's selective forwarding unit. A sans-IO core (rooms, participants, forwarding)
//! over one [`leg::Leg`] per participant, each an rtc peer connection in ICE-lite mode on
//! the SFU's single UDP port ([`demux`] tells datagrams apart); a thin tokio driver moves
//! bytes. Work in progress: the legs and the demultiplexer exist; rooms and forwarding
//! come next (see the SFU issue).

pub mod demux;
pub mod leg;
