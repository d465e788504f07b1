//! A NACK generator that asks at once and asks again only after a round trip. rtc's
//! generator (0.21.1) NACKs every missing packet once per fixed interval (100 ms by
//! default): the first request for a loss waits up to that interval, and a shorter interval
//! asks again for packets whose retransmission is still on its way, doubling the
//! retransmissions. Measured before this (`sotto-bench run loss-5.toml --group 3 --video`,
//! both hops 5 % lossy): 5-9 video frames a listener gave up in 20 s, with 5-7 freezes,
//! because a lost packet took a NACK period plus a round trip on each hop, and a lost
//! retransmission another period.
//!
//! Here a gap is NACKed at the first tick after it opens ([`REORDER_GRACE`] later, so that
//! a packet merely overtaken is not asked for), and again each time a round trip passes
//! without it (the round trip measured from a NACK to the retransmission it brought), at
//! most [`MAX_TRIES`] times and never after [`MAX_WAIT`]: what comes later than that is
//! too late to be played. Sans-IO: the time is the packets' and the ticks'.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    AttributedPacket, Interceptor, NackResponderBuilder, Packet, Registry, Slot, StreamInfo,
    TaggedPacket,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RtpCodecKind, TYPE_RTCP_FB_NACK};
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

/// How long a gap stays open before its first NACK: reordering usually closes it sooner.
pub const REORDER_GRACE: Duration = Duration::from_millis(5);
/// How many times one packet is asked for.
pub const MAX_TRIES: u8 = 10;
/// A packet missing for longer than this is given up.
pub const MAX_WAIT: Duration = Duration::from_millis(1000);
/// A jump of more sequence numbers than this is a new start, not a loss.
pub const MAX_GAP: u64 = 1000;
/// The round trip assumed until one is measured.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// How many round-trip samples [`NackGenerator::rtt`] looks at.
pub const RTT_SAMPLES: usize = 16;
/// A NACK is repeated no sooner than this after the last.
const MIN_RETRY: Duration = Duration::from_millis(20);

/// A missing packet.
#[derive(Debug, Clone, Copy)]
struct Missing {
    /// When its gap opened.
    since: Instant,
    /// When it was last asked for, and how many times.
    asked: Option<Instant>,
    tries: u8,
}

/// One remote stream.
#[derive(Debug, Default)]
struct Stream {
    /// The highest sequence number seen, extended past wraps.
    newest: Option<u64>,
    missing: BTreeMap<u64, Missing>,
}

impl Stream {
    /// The extended form of `seq`: the one nearest the newest.
    fn extend(&self, seq: u16) -> u64 {
        let Some(newest) = self.newest else {
            return u64::from(seq) + (1 << 16);
        };
        let delta = i64::from(seq.wrapping_sub(newest as u16) as i16);
        newest.saturating_add_signed(delta)
    }

    /// Packet `seq` arrived `now`; returns the round trip it measured, if it answered a
    /// first NACK.
    fn arrived(&mut self, seq: u16, now: Instant) -> Option<Duration> {
        let extended = self.extend(seq);
        match self.newest {
            None => self.newest = Some(extended),
            Some(newest) if extended > newest => {
                if extended - newest > MAX_GAP {
                    self.missing.clear();
                } else {
                    for lost in newest + 1..extended {
                        self.missing.insert(
                            lost,
                            Missing {
                                since: now,
                                asked: None,
                                tries: 0,
                            },
                        );
                    }
                }
                self.newest = Some(extended);
            }
            Some(_) => {
                let missing = self.missing.remove(&extended)?;
                // Only an answer to a single NACK is a clean sample: after two, which one
                // it answers is unknown.
                if missing.tries == 1 {
                    return missing.asked.map(|at| now.saturating_duration_since(at));
                }
            }
        }
        None
    }

    /// Forgets what is too old or was asked for too often.
    fn prune(&mut self, now: Instant) {
        let newest = self.newest.unwrap_or(0);
        self.missing.retain(|seq, missing| {
            missing.tries < MAX_TRIES
                && now.saturating_duration_since(missing.since) < MAX_WAIT
                && newest - seq <= MAX_GAP
        });
    }

    /// When the next NACK of this stream is due, if any packet is missing.
    fn due(&self, retry: Duration) -> Option<Instant> {
        self.missing
            .values()
            .map(|missing| match missing.asked {
                None => missing.since + REORDER_GRACE,
                Some(at) => at + retry,
            })
            .min()
    }

    /// The sequence numbers to ask for `now`, marked as asked.
    fn ask(&mut self, now: Instant, retry: Duration) -> Vec<u16> {
        let mut asked = Vec::new();
        for (seq, missing) in self.missing.iter_mut() {
            let due = match missing.asked {
                None => missing.since + REORDER_GRACE,
                Some(at) => at + retry,
            };
            if due <= now {
                missing.asked = Some(now);
                missing.tries += 1;
                asked.push(*seq as u16);
            }
        }
        asked
    }
}

/// rtc's `configure_nack` with this generator in place of rtc's: `nack` and `nack pli`
/// feedback on the video codecs registered so far, rtc's NACK responder, and a
/// [`NackGenerator`].
pub fn configure(registry: Registry, media_engine: &mut MediaEngine) -> Registry {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    registry
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::NackGenerator, NackGenerator::new())
}

/// The interceptor: goes in rtc's `Slot::NackGenerator`, in place of rtc's generator.
pub struct NackGenerator {
    sender_ssrc: u32,
    streams: HashMap<u32, Stream>,
    /// The last round trips measured, from NACKs to the retransmissions they brought.
    rtts: VecDeque<Duration>,
    /// Their lower median (see [`NackGenerator::rtt`]), kept as samples come.
    rtt: Option<Duration>,
    /// Packets asked for so far.
    requested: u64,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Default for NackGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl NackGenerator {
    /// A generator for every remote stream that negotiated `nack` feedback.
    pub fn new() -> NackGenerator {
        NackGenerator {
            sender_ssrc: rand::random(),
            streams: HashMap::new(),
            rtts: VecDeque::new(),
            rtt: None,
            requested: 0,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// The round trip: the (lower) median of the last [`RTT_SAMPLES`] measured. Behind an SFU
    /// some NACKs are answered late, when the packet was lost upstream and the SFU had to
    /// recover it first (an average over them slowed the second tries for packets lost on
    /// this hop), and some early, when the SFU had just recovered and sent the packet as
    /// the NACK left (a minimum over them asked again while retransmissions were on their
    /// way: 22 % retransmissions for 5 % loss in the SFU's lossy-network test).
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// How many packets were asked for (each try counts).
    pub fn requested(&self) -> u64 {
        self.requested
    }

    fn retry(&self) -> Duration {
        let rtt = self.rtt().unwrap_or(INITIAL_RTT);
        (rtt + rtt / 8).max(MIN_RETRY)
    }

    fn generate(&mut self, now: Instant) {
        let retry = self.retry();
        for (ssrc, stream) in self.streams.iter_mut() {
            stream.prune(now);
            let asked = stream.ask(now, retry);
            if asked.is_empty() {
                continue;
            }
            self.requested += asked.len() as u64;
            let nack = TransportLayerNack {
                sender_ssrc: self.sender_ssrc,
                media_ssrc: *ssrc,
                nacks: nack_pairs_from_sequence_numbers(&asked),
            };
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack)])),
            });
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackGenerator {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(stream) = self.streams.get_mut(&packet.header.ssrc)
            && let Some(sample) = stream.arrived(packet.header.sequence_number, msg.now)
        {
            if self.rtts.len() == RTT_SAMPLES {
                self.rtts.pop_front();
            }
            self.rtts.push_back(sample);
            let mut sorted: Vec<Duration> = self.rtts.iter().copied().collect();
            sorted.sort_unstable();
            self.rtt = sorted.get(sorted.len().saturating_sub(1) / 2).copied();
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

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        let retry = self.retry();
        if self
            .streams
            .values()
            .filter_map(|stream| stream.due(retry))
            .any(|due| due <= now)
        {
            self.generate(now);
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let retry = self.retry();
        self.streams
            .values()
            .filter_map(|stream| stream.due(retry))
            .min()
    }
}

impl Interceptor for NackGenerator {
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|feedback| feedback.typ == "nack" && feedback.parameter.is_empty());
        if nack {
            self.streams.insert(info.ssrc, Stream::default());
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::RTCPFeedback;

    const SSRC: u32 = 1234;

    fn generator() -> NackGenerator {
        let mut generator = NackGenerator::new();
        generator.bind_remote_stream(&StreamInfo {
            ssrc: SSRC,
            clock_rate: 90_000,
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        generator
    }

    fn receive(generator: &mut NackGenerator, seq: u16, now: Instant) {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                ssrc: SSRC,
                sequence_number: seq,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0; 100]),
        };
        generator
            .handle_read(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)),
            })
            .unwrap_or_else(|err| panic!("read: {err}"));
        while generator.poll_read().is_some() {}
    }

    /// Runs the generator's ticks up to `until`; returns the sequence numbers it NACKed.
    fn tick(generator: &mut NackGenerator, until: Instant) -> Vec<u16> {
        while let Some(due) = generator.poll_timeout() {
            if due > until {
                break;
            }
            generator
                .handle_timeout(due)
                .unwrap_or_else(|err| panic!("tick: {err}"));
        }
        let mut asked = Vec::new();
        while let Some(packet) = generator.poll_write() {
            let Packet::Rtcp(packets) = packet.message.packet else {
                continue;
            };
            for packet in packets {
                let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
                    continue;
                };
                assert_eq!(nack.media_ssrc, SSRC);
                for pair in &nack.nacks {
                    asked.extend(pair.packet_list());
                }
            }
        }
        asked
    }

    #[test]
    fn a_gap_is_asked_for_at_once_and_again_after_a_round_trip() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut generator = generator();
        receive(&mut generator, 65_534, t0);
        receive(&mut generator, 65_535, t0);
        // 0 and 1 lost across the wrap.
        receive(&mut generator, 2, t0 + ms(5));
        assert!(tick(&mut generator, t0 + ms(8)).is_empty(), "a grace first");
        assert_eq!(tick(&mut generator, t0 + ms(15)), vec![0, 1]);
        // 0 comes back 40 ms after the NACK (sent at 10 ms): the round trip is 40 ms.
        receive(&mut generator, 0, t0 + ms(50));
        assert_eq!(generator.rtt(), Some(ms(40)));
        // 1 is asked for again a round trip and an eighth after the first NACK.
        assert!(tick(&mut generator, t0 + ms(54)).is_empty());
        assert_eq!(tick(&mut generator, t0 + ms(55)), vec![1]);
        receive(&mut generator, 1, t0 + ms(100));
        assert!(
            tick(&mut generator, t0 + ms(500)).is_empty(),
            "nothing missing"
        );
        assert_eq!(generator.requested(), 3);
        // The round trip of an answer to a second NACK is not measured.
        assert_eq!(generator.rtt(), Some(ms(40)));
        // An answer that took longer (the SFU first had to recover the packet upstream)
        // does not make the next tries slower.
        receive(&mut generator, 4, t0 + ms(500));
        assert_eq!(tick(&mut generator, t0 + ms(510)), vec![3]);
        receive(&mut generator, 3, t0 + ms(650));
        assert_eq!(generator.rtt(), Some(ms(40)));
    }

    #[test]
    fn a_packet_is_given_up_after_its_tries_or_its_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut generator = generator();
        receive(&mut generator, 10, t0);
        receive(&mut generator, 12, t0);
        let mut tries = 0;
        let mut now = t0;
        while now < t0 + MAX_WAIT * 2 {
            now += ms(5);
            tries += tick(&mut generator, now).len();
        }
        assert!(tries <= usize::from(MAX_TRIES), "{tries} tries");
        assert!(tries >= 5, "{tries} tries");
        assert_eq!(generator.poll_timeout(), None, "given up");
        // A reordered packet that closes its gap within the grace is never asked for.
        receive(&mut generator, 14, now);
        receive(&mut generator, 13, now + ms(2));
        assert!(tick(&mut generator, now + ms(100)).is_empty());
        // A jump is a new start, not a thousand losses.
        receive(&mut generator, 14 + 5_000, now + ms(200));
        assert!(tick(&mut generator, now + ms(300)).is_empty());
    }

    #[test]
    fn streams_without_nack_feedback_are_left_alone() {
        let t0 = Instant::now();
        let mut generator = NackGenerator::new();
        generator.bind_remote_stream(&StreamInfo {
            ssrc: SSRC,
            clock_rate: 48_000,
            ..Default::default()
        });
        receive(&mut generator, 1, t0);
        receive(&mut generator, 5, t0);
        assert!(tick(&mut generator, t0 + Duration::from_secs(1)).is_empty());
    }
}
