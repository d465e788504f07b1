//! A budget for retransmissions. rtc's NACK responder answers every NACK from its cache,
//! however old the packet and however congested the link: a subscriber whose downlink
//! just collapsed NACKs hundreds of packets every 100 ms, and answering them all keeps the
//! link congested (measured in the simulcast test before this existed: after a drop from
//! 5 to 0.7 Mbit/s, packets of the old top layer were still being retransmitted seven
//! seconds after the switch down). This interceptor, between the responder and the wire,
//! drops a retransmission when its packet is older than [`MAX_AGE`] of media time (too
//! late to be played) or when retransmissions already used [`SHARE`] of the estimate.
//!
//! The engine needs the same: a video sender behind a 300 kbit/s link answered the SFU's
//! NACKs for packets its own queue had dropped, about 12,000 retransmissions in 16 s,
//! which kept the link full and took the audio down with it (`sotto-bench run
//! cap-300k.toml --group 2 --video`, before the engine had this).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

/// Its slot: between the pacer (3,000) and the NACK responder (4,000).
pub const SLOT: usize = 3_500;

/// A retransmission of a packet older than this (by RTP timestamp, against the newest
/// packet sent on its stream) is dropped.
pub const MAX_AGE: Duration = Duration::from_millis(500);

/// Retransmissions may use this fraction of the send-side estimate.
pub const SHARE: f64 = 0.25;

/// Before the first estimate, retransmissions may use this many bit/s.
const DEFAULT_BUDGET_BPS: f64 = 500_000.0;

/// The longest burst the budget allows, as time at the budget rate.
const BURST: Duration = Duration::from_millis(200);

struct Stream {
    clock_rate: u32,
    /// The newest timestamp sent (first-time packets only).
    newest: Option<u32>,
}

/// The interceptor: goes at [`SLOT`], between the NACK responder and the wire.
pub struct RtxBudget {
    estimate_bps: Arc<AtomicU64>,
    /// Retransmissions dropped so far.
    dropped: Arc<AtomicU64>,
    /// Primary SSRC → its stream; RTX SSRC → primary SSRC.
    streams: HashMap<u32, Stream>,
    rtx: HashMap<u32, u32>,
    /// Token bucket, in bits.
    tokens: f64,
    refilled: Option<Instant>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtxBudget {
    /// A budget at [`SHARE`] of `estimate_bps`, counting what it drops in `dropped`.
    pub fn new(estimate_bps: Arc<AtomicU64>, dropped: Arc<AtomicU64>) -> RtxBudget {
        RtxBudget {
            estimate_bps,
            dropped,
            streams: HashMap::new(),
            rtx: HashMap::new(),
            tokens: 0.0,
            refilled: None,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn budget_bps(&self) -> f64 {
        match self.estimate_bps.load(Ordering::Relaxed) {
            0 => DEFAULT_BUDGET_BPS,
            bps => bps as f64 * SHARE,
        }
    }

    fn refill(&mut self, now: Instant) {
        let rate = self.budget_bps();
        let cap = rate * BURST.as_secs_f64();
        let elapsed = self
            .refilled
            .map_or(BURST, |at| now.saturating_duration_since(at));
        self.tokens = (self.tokens + rate * elapsed.as_secs_f64()).min(cap);
        self.refilled = Some(now);
    }

    /// Whether a retransmission of `packet` may go.
    fn admit(&mut self, now: Instant, packet: &rtc::rtp::Packet) -> bool {
        let ssrc = self
            .rtx
            .get(&packet.header.ssrc)
            .copied()
            .unwrap_or(packet.header.ssrc);
        if let Some(stream) = self.streams.get(&ssrc)
            && let Some(newest) = stream.newest
            && stream.clock_rate > 0
        {
            let behind = newest.wrapping_sub(packet.header.timestamp);
            // (A timestamp "ahead" of the newest wraps to a huge number: not old.)
            let age = f64::from(behind) / f64::from(stream.clock_rate);
            if behind < u32::MAX / 2 && age > MAX_AGE.as_secs_f64() {
                return false;
            }
        }
        self.refill(now);
        let bits = ((packet.header.marshal_size() + packet.payload.len()) * 8) as f64;
        if self.tokens < bits {
            return false;
        }
        self.tokens -= bits;
        true
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxBudget {
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

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &msg.message.packet {
            if msg.message.has(&Attribute::Retransmission) {
                if !self.admit(msg.now, packet) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            } else if let Some(stream) = self.streams.get_mut(&packet.header.ssrc) {
                let newer = stream.newest.is_none_or(|newest| {
                    let ahead = packet.header.timestamp.wrapping_sub(newest);
                    ahead < u32::MAX / 2
                });
                if newer {
                    stream.newest = Some(packet.header.timestamp);
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

impl Interceptor for RtxBudget {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.insert(
            info.ssrc,
            Stream {
                clock_rate: info.clock_rate,
                newest: None,
            },
        );
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.insert(rtx, info.ssrc);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.remove(&rtx);
        }
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    fn rtp(now: Instant, ssrc: u32, ts: u32, retransmission: bool) -> TaggedPacket {
        let packet = AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                ssrc,
                timestamp: ts,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![0u8; 988]),
        }));
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: if retransmission {
                packet.with(Attribute::Retransmission)
            } else {
                packet
            },
        }
    }

    fn written(budget: &mut RtxBudget) -> usize {
        std::iter::from_fn(|| budget.poll_write()).count()
    }

    #[test]
    fn old_or_over_budget_retransmissions_are_dropped() {
        let estimate = Arc::new(AtomicU64::new(400_000)); // 100 kbit/s for retransmissions
        let dropped = Arc::new(AtomicU64::new(0));
        let mut budget = RtxBudget::new(estimate, dropped.clone());
        budget.bind_local_stream(&StreamInfo {
            ssrc: 10,
            ssrc_rtx: Some(11),
            clock_rate: 90_000,
            ..Default::default()
        });
        let now = Instant::now();
        // First-time packets always go; the newest is at 1 s of media time.
        for ts in [0, 45_000, 90_000] {
            budget.handle_write(rtp(now, 10, ts, false)).unwrap();
        }
        assert_eq!(written(&mut budget), 3);
        // A repair of the packet at 0.5 s (0.5 s behind: allowed), one at 0 (too old).
        budget.handle_write(rtp(now, 11, 45_000, true)).unwrap();
        budget.handle_write(rtp(now, 11, 0, true)).unwrap();
        assert_eq!(written(&mut budget), 1);
        // A burst of repairs: 200 ms at 100 kbit/s is 20 kbit, two 8-kbit packets.
        for _ in 0..5 {
            budget.handle_write(rtp(now, 11, 90_000, true)).unwrap();
        }
        assert_eq!(
            written(&mut budget),
            1,
            "the first repair spent part of the burst"
        );
        // A second later the bucket is full again.
        let later = now + Duration::from_secs(1);
        for _ in 0..5 {
            budget.handle_write(rtp(later, 11, 90_000, true)).unwrap();
        }
        assert_eq!(written(&mut budget), 2);
        assert_eq!(dropped.load(Ordering::Relaxed), 1 + 4 + 3);
    }
}
