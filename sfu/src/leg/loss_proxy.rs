//! Tells a publisher what its listeners lose. Through an SFU, audio crosses two hops, and
//! a publisher that hears only its own uplink's receiver reports sizes its FEC and RED for
//! one of them: at 10 % loss per hop its listeners lose about 19 % of packets while it
//! plans for 10 %. The core keeps, per published audio stream, the worst loss its
//! listeners report (`Sfu::note_audio_loss`); this interceptor raises the `fraction_lost`
//! of the SFU's own report blocks about that stream to it, as they leave. LiveKit does the
//! same for Opus ("loss proxying"); nothing else of the report changes, so round-trip
//! times and the cumulative counts stay the uplink's own.
//!
//! Its slot is below rtc's report generators (10_000 and 11_000): the write walk runs
//! from the application to the wire, so the reports they make pass through here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::SSRC;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Its slot: below the receiver (10_000) and sender (11_000) report generators.
pub(crate) const SLOT: usize = 9_500;

/// Per received SSRC, the loss its listeners report (`fraction_lost`, 0..=255) and until
/// when that holds. Shared by the leg (which sets it) and its interceptor.
pub(crate) type ListenerLoss = Arc<Mutex<HashMap<SSRC, (u8, Instant)>>>;

/// Raises outgoing report blocks' `fraction_lost` to the listeners' loss.
pub(crate) struct LossProxy {
    loss: ListenerLoss,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl LossProxy {
    /// A proxy reading `loss`.
    pub(crate) fn new(loss: ListenerLoss) -> LossProxy {
        LossProxy {
            loss,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// Raises each block about a stream with a current listener loss; true if any moved.
    fn raise(&self, blocks: &mut [ReceptionReport], now: Instant) -> bool {
        let loss = self.loss.lock().unwrap_or_else(PoisonError::into_inner);
        let mut moved = false;
        for block in blocks {
            if let Some(&(fraction, until)) = loss.get(&block.ssrc)
                && now < until
                && fraction > block.fraction_lost
            {
                block.fraction_lost = fraction;
                moved = true;
            }
        }
        moved
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossProxy {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        let now = msg.now;
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            for packet in packets.iter_mut() {
                let any = packet.as_any();
                if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                    let mut report = report.clone();
                    if self.raise(&mut report.reports, now) {
                        *packet = Box::new(report);
                    }
                } else if let Some(report) = any.downcast_ref::<SenderReport>() {
                    let mut report = report.clone();
                    if self.raise(&mut report.reports, now) {
                        *packet = Box::new(report);
                    }
                }
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for LossProxy {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    use super::*;

    fn report(ssrc: SSRC, fraction_lost: u8) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost,
            ..Default::default()
        }
    }

    fn written(proxy: &mut LossProxy, packet: Box<dyn rtc::rtcp::Packet>, now: Instant) -> u8 {
        proxy
            .handle_write(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![packet])),
            })
            .expect("written");
        let out: TaggedPacket = proxy.poll_write().expect("passed on");
        let Packet::Rtcp(packets) = out.message.packet else {
            panic!("not RTCP");
        };
        let any = packets[0].as_any();
        any.downcast_ref::<ReceiverReport>()
            .map(|r| r.reports[0].fraction_lost)
            .or_else(|| {
                any.downcast_ref::<SenderReport>()
                    .map(|r| r.reports[0].fraction_lost)
            })
            .expect("a report")
    }

    #[test]
    fn report_blocks_rise_to_the_listeners_loss_while_it_holds() {
        let loss: ListenerLoss = Arc::default();
        let mut proxy = LossProxy::new(loss.clone());
        let now = Instant::now();
        loss.lock()
            .expect("lock")
            .insert(7, (48, now + Duration::from_secs(5)));
        let rr = |fraction| -> Box<dyn rtc::rtcp::Packet> {
            Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![report(7, fraction)],
                ..Default::default()
            })
        };
        // Raised to the listeners' loss, never lowered below the uplink's own.
        assert_eq!(written(&mut proxy, rr(10), now), 48);
        assert_eq!(written(&mut proxy, rr(60), now), 60);
        // Sender reports carry blocks too.
        let sr: Box<dyn rtc::rtcp::Packet> = Box::new(SenderReport {
            ssrc: 1,
            reports: vec![report(7, 0)],
            ..Default::default()
        });
        assert_eq!(written(&mut proxy, sr, now), 48);
        // Another stream, and the same one once the listeners' report is stale.
        let other: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverReport {
            ssrc: 1,
            reports: vec![report(8, 3)],
            ..Default::default()
        });
        assert_eq!(written(&mut proxy, other, now), 3);
        assert_eq!(
            written(&mut proxy, rr(10), now + Duration::from_secs(6)),
            10
        );
    }
}
