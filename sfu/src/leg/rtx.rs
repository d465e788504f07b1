//! RFC 4588 retransmissions unwrapped at the wire end of the interceptor chain.
//!
//! rtc 0.21.1 unwraps an RTX packet only on its way to the application, after the chain:
//! the NACK generator logs it under the RTX SSRC, so the primary sequence number it
//! repaired stays "missing" and is NACKed again every interval, for as long as it stays in
//! the log window. Measured in the lossy-network test before this existed: ~1,500 RTX
//! packets per forwarded video stream for ~45 real losses. Unwrapping before the chain
//! (this interceptor sits below the FEC decoder and NACK generator) lets every interceptor
//! see the repaired packet as what it is: the primary stream's packet, late. The endpoint
//! then finds nothing left to unwrap.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Its slot: wire-most, before anything that reads inbound sequence numbers.
pub(crate) const SLOT: usize = 500;

/// Unwraps inbound RTX into the stream it repairs.
#[derive(Default)]
pub(crate) struct RtxUnwrap {
    /// RTX SSRC → (primary SSRC, primary payload type).
    primaries: HashMap<u32, (u32, u8)>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    /// RTX packets too short to carry the original sequence number (padding probes).
    pub(crate) dropped: u64,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxUnwrap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet
            && let Some(&(ssrc, payload_type)) = self.primaries.get(&packet.header.ssrc)
        {
            if packet.payload.len() < 2 {
                // Padding only: bandwidth probing, nothing to repair.
                self.dropped += 1;
                return Ok(());
            }
            packet.header.sequence_number =
                u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
            packet.header.ssrc = ssrc;
            packet.header.payload_type = payload_type;
            packet.header.padding = false;
            packet.payload = packet.payload.slice(2..);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtxUnwrap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let (Some(rtx), Some(_)) = (info.ssrc_rtx, info.payload_type_rtx) {
            self.primaries.insert(rtx, (info.ssrc, info.payload_type));
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.primaries.remove(&rtx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    fn rtp(ssrc: u32, payload_type: u8, seq: u16, payload: &[u8]) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    ssrc,
                    payload_type,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: bytes::Bytes::copy_from_slice(payload),
            })),
        }
    }

    fn header(msg: &TaggedPacket) -> (u32, u8, u16, Vec<u8>) {
        match &msg.message.packet {
            Packet::Rtp(p) => (
                p.header.ssrc,
                p.header.payload_type,
                p.header.sequence_number,
                p.payload.to_vec(),
            ),
            _ => panic!("not RTP"),
        }
    }

    #[test]
    fn rtx_becomes_the_primary_packet_it_repairs_and_probes_are_dropped() {
        let mut unwrap = RtxUnwrap::default();
        unwrap.bind_remote_stream(&StreamInfo {
            ssrc: 1000,
            ssrc_rtx: Some(1001),
            payload_type: 96,
            payload_type_rtx: Some(97),
            ..Default::default()
        });
        // An RTX packet (its own sequence 7) repairing primary sequence 0x1234.
        unwrap
            .handle_read(rtp(1001, 97, 7, &[0x12, 0x34, 0xAA, 0xBB]))
            .unwrap();
        // A primary packet passes untouched; so does an unrelated stream.
        unwrap.handle_read(rtp(1000, 96, 5, &[1])).unwrap();
        unwrap.handle_read(rtp(2001, 97, 9, &[0, 1, 2])).unwrap();
        // A padding-only probe on the RTX SSRC.
        unwrap.handle_read(rtp(1001, 97, 8, &[])).unwrap();

        assert_eq!(
            header(&unwrap.poll_read().unwrap()),
            (1000, 96, 0x1234, vec![0xAA, 0xBB])
        );
        assert_eq!(header(&unwrap.poll_read().unwrap()), (1000, 96, 5, vec![1]));
        assert_eq!(
            header(&unwrap.poll_read().unwrap()),
            (2001, 97, 9, vec![0, 1, 2])
        );
        assert!(unwrap.poll_read().is_none());
        assert_eq!(unwrap.dropped, 1);
    }
}
