//! rtc's interceptor chain ends inbound RTCP at its terminus unless an interceptor marks a
//! packet for the application (`Attribute::DeliverToApplication`): by default an SFU never
//! hears a subscriber's keyframe request. This interceptor, the last before the terminus,
//! marks the feedback the core acts on or counts: PLI, FIR, NACK, and the report blocks of
//! receiver and sender reports (what a subscriber loses of the audio it receives; the
//! chain has read them by then). It also keeps the congestion controller's
//! latest estimate where the leg can read it: the chain owns the estimator and announces a
//! new target only as an attribute on the feedback packet that moved it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Its slot: above every named one, so it sees what the whole chain has seen.
pub(crate) const SLOT: usize = 14_000;

/// Marks inbound PLI, FIR, NACK and reports for the application; publishes the send-side estimate.
pub(crate) struct FeedbackTap {
    /// The congestion controller's target, bit/s (0 until the first feedback).
    estimate_bps: Arc<AtomicU64>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl FeedbackTap {
    /// A tap that stores the estimate in `estimate_bps`.
    pub(crate) fn new(estimate_bps: Arc<AtomicU64>) -> FeedbackTap {
        FeedbackTap {
            estimate_bps,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

fn wanted(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<TransportLayerNack>()
        || any.is::<ReceiverReport>()
        || any.is::<SenderReport>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
            msg.message.get(&Attribute::TargetBitrateChanged {
                bits_per_second: 0.0,
            })
        {
            self.estimate_bps
                .store(bits_per_second.max(0.0) as u64, Ordering::Relaxed);
        }
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| wanted(p.as_ref()))
        {
            msg.message.add(Attribute::DeliverToApplication);
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

impl Interceptor for FeedbackTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
