//! An interceptor that shows every inbound RTCP compound packet, with the instant it
//! arrived, to a function of the application's, and passes every packet on unchanged. rtc
//! ends inbound RTCP inside its interceptor chain: an application that wants to act on
//! feedback (keyframe requests, report blocks) sees it only through an interceptor.
//! Sans-IO: it reads no clock; the time is the packet's.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// What an [`RtcpTap`] calls: each inbound compound packet and its arrival.
pub trait OnRtcp: FnMut(&[Box<dyn rtc::rtcp::Packet>], Instant) + Send + Sync {}

impl<F: FnMut(&[Box<dyn rtc::rtcp::Packet>], Instant) + Send + Sync> OnRtcp for F {}

/// The interceptor; `F` is called with each inbound compound packet and its arrival.
pub struct RtcpTap<F> {
    on_rtcp: F,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl<F> RtcpTap<F>
where
    F: FnMut(&[Box<dyn rtc::rtcp::Packet>], Instant) + Send + Sync,
{
    /// A tap that calls `on_rtcp`.
    pub fn new(on_rtcp: F) -> Self {
        RtcpTap {
            on_rtcp,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl<F> Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap<F>
where
    F: FnMut(&[Box<dyn rtc::rtcp::Packet>], Instant) + Send + Sync,
{
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            (self.on_rtcp)(packets, msg.now);
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

impl<F> Interceptor for RtcpTap<F>
where
    F: FnMut(&[Box<dyn rtc::rtcp::Packet>], Instant) + Send + Sync,
{
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
