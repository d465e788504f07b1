//! The forwarding loop (issue 19's fan-out), sans-IO: one plaintext packet from a
//! producer, then for each of its consumers a copy written into a reused buffer with the
//! consumer's SSRC, payload type, numbering and header extensions, encrypted in place
//! under the subscriber's SRTP, and queued with its address in an [`Outbox`] the driver
//! sends in `sendmmsg` batches. mediasoup's worker does the same job this way; read, not
//! copied.
//!
//! What it owns: the per-consumer slot ([`Consumer`]) and the per-subscriber state the
//! loop writes ([`Subscriber`]: its transport and transport-wide sequence number). What it
//! must not do per packet: allocate (buffers are reused; extensions are a fixed array),
//! lock, or look at any stream but this producer's consumers. Choosing layers, pausing and
//! last-N happen elsewhere and only flip a consumer's fields.

use std::net::SocketAddr;
use std::time::Instant;

use crate::core::rtp::{Header, RtpView, write_forwarded};
use crate::core::sdp::ExtensionIds;
use crate::core::send::SendSide;
use crate::core::transport::{Transport, TransportState};
use crate::layers::LossMeter;
use crate::red;
use crate::rewrite::Rewriter;

/// The largest datagram the SFU sends: a full-size RTP packet plus the SRTP tag.
pub const MAX_DATAGRAM: usize = 1500;

/// What an outbox's buffer holds before it first grows: an audio packet with RED and the
/// SRTP tag. A buffer that once carried video keeps its larger size, so a busy outbox
/// stops allocating after its first rounds, and an SFU carrying only audio keeps a
/// fifth of the memory per queued copy.
const FIRST_BUFFER: usize = 320;

/// Datagrams an [`Outbox`] holds before the driver must flush it (one `sendmmsg`).
pub const OUTBOX_CAPACITY: usize = 64;

/// One subscriber as the loop sees it.
#[derive(Debug)]
pub struct Subscriber {
    /// Its transport: SRTP for what we send, the address to send to.
    pub transport: Transport,
    /// What it was sent, for the bandwidth estimate from its feedback; its count of
    /// copies gives the transport-wide sequence numbers (one counter per transport,
    /// across all its streams).
    pub send: SendSide,
    /// The video it was sent and NACKed, for the loss it reports.
    pub loss: LossMeter,
}

impl Subscriber {
    /// A subscriber on `transport`.
    pub fn new(transport: Transport) -> Subscriber {
        Subscriber {
            transport,
            send: SendSide::new(),
            loss: LossMeter::default(),
        }
    }
}

/// One subscriber's copy of one producer's stream, flat: everything the loop reads.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The subscriber's index among the worker's [`Subscriber`]s.
    pub subscriber: usize,
    /// The SSRC the SFU sends this stream with.
    pub ssrc: u32,
    /// The subscriber's payload type for the codec.
    pub payload_type: u8,
    /// The subscriber's RED payload type, when it takes RED (audio).
    pub red_payload_type: Option<u8>,
    /// The subscriber's header-extension ids.
    pub extensions: ExtensionIds,
    /// The mid of the subscriber's section for this stream (`sdes:mid`'s value).
    pub mid: String,
    /// Sequence and timestamp continuity.
    pub rewriter: Rewriter,
    /// The layer (publisher SSRC) being forwarded.
    pub current: Option<u32>,
    /// The layer to switch to where a keyframe starts (audio: its one layer, at once).
    pub target: Option<u32>,
    /// Retransmissions, when the subscriber negotiated RTX for the codec.
    pub rtx: Option<Rtx>,
    /// Paused by the subscriber: nothing is sent (the core clears `current`, so it
    /// resumes at a keyframe).
    pub paused: bool,
    /// The best simulcast layer the subscriber wants (it may show the video small).
    pub max_quality: u8,
    /// When the bandwidth estimate last moved it up a layer.
    pub climbed_at: Option<Instant>,
    /// Packets and bytes sent.
    pub packets: u64,
    /// Payload bytes sent.
    pub bytes: u64,
}

impl Consumer {
    /// A consumer for `subscriber` sending as `ssrc` with `payload_type` in the section
    /// `mid`.
    pub fn new(
        subscriber: usize,
        ssrc: u32,
        payload_type: u8,
        extensions: ExtensionIds,
        mid: &str,
    ) -> Consumer {
        Consumer {
            subscriber,
            ssrc,
            payload_type,
            red_payload_type: None,
            extensions,
            mid: mid.to_owned(),
            rewriter: Rewriter::default(),
            current: None,
            target: None,
            rtx: None,
            paused: false,
            max_quality: 2,
            climbed_at: None,
            packets: 0,
            bytes: 0,
        }
    }
}

/// A consumer's retransmission stream (RFC 4588): its own SSRC, payload type and
/// numbering; each packet carries the original sequence number first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtx {
    /// The RTX SSRC the SFU announced.
    pub ssrc: u32,
    /// The subscriber's RTX payload type for the codec.
    pub payload_type: u8,
    /// The next RTX sequence number.
    pub seq: u16,
}

/// The sender report (RFC 3550 §6.4.1) of a consumer's stream at `now`, once it sent
/// anything: its packet and payload-octet counts, and the RTP timestamp that goes with
/// `ntp` (the wall clock now, NTP format), extrapolated from its newest packet at
/// `clock_rate`. The forwarding adds the same delay to a publisher's audio and video, so
/// the mapping a receiver builds from these keeps them in sync.
pub fn sender_report(
    consumer: &Consumer,
    clock_rate: u32,
    now: Instant,
    ntp: u64,
) -> Option<rtc::rtcp::sender_report::SenderReport> {
    let (timestamp, at) = consumer.rewriter.last_sent()?;
    let elapsed = now.saturating_duration_since(at).as_secs_f64();
    let ticks = (elapsed * f64::from(clock_rate)) as u32;
    Some(rtc::rtcp::sender_report::SenderReport {
        ssrc: consumer.ssrc,
        ntp_time: ntp,
        rtp_time: timestamp.wrapping_add(ticks),
        packet_count: consumer.packets as u32,
        octet_count: consumer.bytes as u32,
        ..Default::default()
    })
}

/// Datagrams ready to send: buffers reused from one batch to the next.
#[derive(Debug)]
pub struct Outbox {
    buffers: Vec<Vec<u8>>,
    to: Vec<SocketAddr>,
    len: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    /// An empty outbox with [`OUTBOX_CAPACITY`] buffers, each grown as datagrams need
    /// (up to [`MAX_DATAGRAM`] and the tag) and then kept.
    pub fn new() -> Outbox {
        Outbox {
            buffers: (0..OUTBOX_CAPACITY)
                .map(|_| Vec::with_capacity(FIRST_BUFFER))
                .collect(),
            to: vec![SocketAddr::from(([0, 0, 0, 0], 0)); OUTBOX_CAPACITY],
            len: 0,
        }
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Full: the driver sends and [`Outbox::clear`]s before more can be queued.
    pub fn is_full(&self) -> bool {
        self.len == self.buffers.len()
    }

    /// The queued datagrams with their addresses.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.buffers[..self.len]
            .iter()
            .zip(&self.to[..self.len])
            .map(|(b, to)| (b.as_slice(), *to))
    }

    /// The queued datagrams as slices, and their addresses (for `sendmmsg`).
    pub fn parts(&self) -> (&[Vec<u8>], &[SocketAddr]) {
        (&self.buffers[..self.len], &self.to[..self.len])
    }

    /// Queues `datagram` as it is (tests of what drains the outboxes).
    #[cfg(test)]
    pub(crate) fn push_for_test(&mut self, datagram: &[u8], to: SocketAddr) {
        let buffer = &mut self.buffers[self.len];
        buffer.clear();
        buffer.extend_from_slice(datagram);
        self.to[self.len] = to;
        self.len += 1;
    }

    /// Forgets what was queued; the buffers stay for reuse.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// What one pass of the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Copies queued.
    pub sent: usize,
    /// Consumers withheld from (paused, last-N).
    pub withheld: usize,
    /// Consumers skipped: not connected yet, or a late packet from before a switch.
    pub skipped: usize,
    /// Copies that failed (a RED payload that does not unpack, an SRTP error).
    pub failed: usize,
    /// Consumers left for the next call because the outbox filled: pass `resume_at`.
    pub resume_at: Option<usize>,
}

/// The producer's side of a packet: its view, its extension ids, and whether its payload
/// is RED (audio).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The packet, decrypted.
    pub packet: RtpView<'a>,
    /// The publisher's extension ids for its section.
    pub extensions: &'a ExtensionIds,
    /// The payload is RED (RFC 2198) over Opus.
    pub red: bool,
    /// Where decoding can start: `Some(true)` at the first packet of a keyframe,
    /// `Some(false)` elsewhere, `None` when the publisher says nothing (no dependency
    /// descriptor: a switch then happens at once).
    pub keyframe: Option<bool>,
    /// The codec's RTP clock rate (for timestamps across a switch).
    pub clock_rate: u32,
    /// Last-N keeps this publisher's audio back now: consumers note the gap and send
    /// nothing.
    pub withheld: bool,
    /// Count what is sent towards each subscriber's reported loss (video).
    pub count_loss: bool,
}

/// The consumers one pass serves: those whose subscriber slot is `index` modulo `count`
/// (one send worker's share; see the core's lanes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This pass's lane.
    pub index: usize,
    /// Lanes in all (at least one).
    pub count: usize,
}

impl Share {
    /// Every consumer.
    pub const ALL: Share = Share { index: 0, count: 1 };

    fn holds(self, subscriber: usize) -> bool {
        subscriber % self.count.max(1) == self.index
    }
}

/// Writes `source` for `consumers[start..]` into `outbox`, stopping when it fills
/// ([`FanOut::resume_at`]: flush, then call again from there).
pub fn fan_out(
    now: Instant,
    source: &Source<'_>,
    consumers: &mut [Consumer],
    start: usize,
    subscribers: &mut [Option<Subscriber>],
    outbox: &mut Outbox,
) -> FanOut {
    fan_out_share(
        now,
        source,
        consumers,
        start,
        subscribers,
        outbox,
        Share::ALL,
    )
}

/// [`fan_out`] for the consumers in `share` only.
pub fn fan_out_share(
    now: Instant,
    source: &Source<'_>,
    consumers: &mut [Consumer],
    start: usize,
    subscribers: &mut [Option<Subscriber>],
    outbox: &mut Outbox,
    share: Share,
) -> FanOut {
    let mut done = FanOut::default();
    let packet = &source.packet;
    let ssrc = packet.ssrc();
    let extensions = Forwarded::of(source);
    // RED's primary block, found once for every consumer without RED.
    let mut primary: Option<Option<(u8, std::ops::Range<usize>)>> = None;
    for (i, consumer) in consumers.iter_mut().enumerate().skip(start) {
        if !share.holds(consumer.subscriber) {
            continue;
        }
        if outbox.is_full() {
            done.resume_at = Some(i);
            return done;
        }
        if consumer.paused {
            done.withheld += 1;
            continue;
        }
        if source.withheld {
            if consumer.current == Some(ssrc) {
                consumer.rewriter.withhold(packet.seq());
            }
            done.withheld += 1;
            continue;
        }
        if consumer.current != Some(ssrc) {
            // Another layer, or the target's keyframe not yet come.
            if consumer.target != Some(ssrc) || source.keyframe == Some(false) {
                done.skipped += 1;
                continue;
            }
            consumer
                .rewriter
                .switch(packet.seq(), packet.timestamp(), now, source.clock_rate);
            consumer.current = Some(ssrc);
        }
        let Some(subscriber) = subscribers
            .get_mut(consumer.subscriber)
            .and_then(Option::as_mut)
        else {
            done.skipped += 1;
            continue;
        };
        let Some(to) = subscriber.transport.remote_addr() else {
            done.skipped += 1;
            continue;
        };
        if subscriber.transport.state() != TransportState::Connected {
            done.skipped += 1;
            continue;
        }
        let Some((seq, timestamp)) =
            consumer
                .rewriter
                .rewrite(packet.seq(), packet.timestamp(), now)
        else {
            done.skipped += 1;
            continue;
        };
        // RED forwarded as it came where the subscriber took it, else its primary alone.
        let (payload_type, payload) = match (source.red, consumer.red_payload_type) {
            (true, Some(red)) => (red, packet.payload()),
            (true, None) => {
                let found = primary.get_or_insert_with(|| red::primary(packet.payload()));
                match found {
                    Some((_, range)) => (consumer.payload_type, &packet.payload()[range.clone()]),
                    None => {
                        done.failed += 1;
                        continue;
                    }
                }
            }
            (false, _) => (consumer.payload_type, packet.payload()),
        };
        let header = Header {
            payload_type,
            seq,
            timestamp,
            ssrc: consumer.ssrc,
            marker: packet.marker(),
        };
        let buffer = &mut outbox.buffers[outbox.len];
        if write_copy(
            now,
            buffer,
            header,
            &extensions,
            consumer,
            subscriber,
            None,
            payload,
        )
        .is_err()
        {
            done.failed += 1;
            continue;
        }
        if source.count_loss {
            subscriber.loss.sent(consumer.ssrc, seq);
        }
        outbox.to[outbox.len] = to;
        outbox.len += 1;
        consumer.packets += 1;
        consumer.bytes += payload.len() as u64;
        done.sent += 1;
    }
    done
}

/// The publisher's extension values a copy carries on: read once per packet.
struct Forwarded<'a> {
    audio_level: Option<&'a [u8]>,
}

impl<'a> Forwarded<'a> {
    fn of(source: &Source<'a>) -> Forwarded<'a> {
        let packet = &source.packet;
        Forwarded {
            audio_level: source
                .extensions
                .audio_level
                .and_then(|id| packet.extension(id)),
        }
    }
}

/// Writes one copy for `consumer` into `buffer` and encrypts it for `subscriber`: the
/// audio level, the subscriber's transport-wide number and the consumer's mid under the
/// subscriber's ids; `prefix` goes before the payload
/// (RTX's original sequence number).
#[allow(clippy::too_many_arguments)]
fn write_copy(
    now: Instant,
    buffer: &mut Vec<u8>,
    header: Header,
    forwarded: &Forwarded<'_>,
    consumer: &Consumer,
    subscriber: &mut Subscriber,
    prefix: Option<[u8; 2]>,
    payload: &[u8],
) -> Result<(), ()> {
    let twcc = subscriber.send.next_twcc().to_be_bytes();
    let mut extensions: [(u8, &[u8]); 3] = [(0, &[]); 3];
    let mut count = 0;
    let ids = &consumer.extensions;
    // Not the dependency descriptor: the publisher's no longer describes the stream after
    // a layer switch (the core reads it for keyframes; subscribers negotiate none).
    for (id, value) in [
        (ids.audio_level, forwarded.audio_level),
        (ids.transport_cc, Some(&twcc[..])),
        (ids.mid, Some(consumer.mid.as_bytes())),
    ] {
        if let (Some(id), Some(value)) = (id, value) {
            extensions[count] = (id, value);
            count += 1;
        }
    }
    match prefix {
        None => write_forwarded(buffer, header, &extensions[..count], payload),
        Some(prefix) => write_forwarded(buffer, header, &extensions[..count], &prefix).map(|()| {
            buffer.extend_from_slice(payload);
        }),
    }
    .map_err(|_| ())?;
    subscriber.transport.protect_rtp(buffer).map_err(|_| ())?;
    if ids.transport_cc.is_some() {
        subscriber
            .send
            .on_sent(header.ssrc, header.seq, buffer.len(), now);
    }
    Ok(())
}

/// What [`retransmit`] did with a NACK's list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retransmitted {
    /// RTX packets queued.
    pub sent: usize,
    /// Numbers not sent: no RTX negotiated, no longer kept, not sent under the current
    /// numbering, or too old.
    pub missed: usize,
}

/// Answers a subscriber's NACK for `consumer` (`lost`: the outgoing sequence numbers it
/// names) with RTX copies from the producer's `history`, into `outbox` while it has
/// room. A packet that arrived more than `max_age` before `now` is not resent (too late to
/// be played).
#[allow(clippy::too_many_arguments)]
pub fn retransmit(
    now: Instant,
    lost: &[u16],
    history: &crate::core::history::History,
    publisher_ids: &ExtensionIds,
    max_age: std::time::Duration,
    consumer: &mut Consumer,
    subscriber: &mut Subscriber,
    outbox: &mut Outbox,
) -> Retransmitted {
    let mut done = Retransmitted::default();
    let Some(mut rtx) = consumer.rtx else {
        done.missed = lost.len();
        return done;
    };
    let Some(to) = subscriber.transport.remote_addr() else {
        done.missed = lost.len();
        return done;
    };
    for &out_seq in lost {
        let original = consumer
            .rewriter
            .original(out_seq)
            .and_then(|seq| history.get(seq))
            .filter(|(_, at)| now.saturating_duration_since(*at) <= max_age)
            .and_then(|(packet, _)| RtpView::parse(packet).ok())
            .filter(|view| Some(view.ssrc()) == consumer.current);
        let Some(view) = original else {
            done.missed += 1;
            continue;
        };
        if outbox.is_full() {
            done.missed += 1;
            continue;
        }
        let Some((_, timestamp)) = consumer
            .rewriter
            .rewrite_stale(view.seq(), view.timestamp())
        else {
            done.missed += 1;
            continue;
        };
        let header = Header {
            payload_type: rtx.payload_type,
            seq: rtx.seq,
            timestamp,
            ssrc: rtx.ssrc,
            marker: view.marker(),
        };
        let source = Source {
            packet: view,
            extensions: publisher_ids,
            red: false,
            keyframe: None,
            clock_rate: 0,
            withheld: false,
            count_loss: false,
        };
        let forwarded = Forwarded::of(&source);
        let buffer = &mut outbox.buffers[outbox.len];
        if write_copy(
            now,
            buffer,
            header,
            &forwarded,
            consumer,
            subscriber,
            Some(out_seq.to_be_bytes()),
            view.payload(),
        )
        .is_err()
        {
            done.missed += 1;
            continue;
        }
        rtx.seq = rtx.seq.wrapping_add(1);
        outbox.to[outbox.len] = to;
        outbox.len += 1;
        done.sent += 1;
    }
    consumer.rtx = Some(rtx);
    done
}

#[cfg(test)]
mod tests;
