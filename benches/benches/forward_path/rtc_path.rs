//! rtc, as the SFU uses it: a `Leg` with one send track, connected to a `Client`.

use super::*;
use sotto_sfu::client::{Client, Publish};
use sotto_sfu::leg::{Leg, LegOutput, SendTrack};

/// A `Leg` with one send track, connected to a `Client`.
pub(crate) struct RtcPath {
    leg: Leg,
    client: Client,
    track: SendTrack,
    audio_level_id: Option<u8>,
    stream: Stream,
    payload: Bytes,
    now: Instant,
    seq: u16,
    timestamp: u32,
    to_client: Vec<bytes::BytesMut>,
    client_next: Option<Instant>,
    wire: Wire,
}

/// The id of `uri` in an SDP's `a=extmap` lines.
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let (id, rest) = line.trim().strip_prefix("a=extmap:")?.split_once(' ')?;
        (rest.split_whitespace().next()? == uri)
            .then(|| id.split('/').next()?.parse().ok())
            .flatten()
    })
}

impl RtcPath {
    pub(crate) fn new(stream: Stream) -> RtcPath {
        let sfu_addr: SocketAddr = SFU_ADDR.parse().expect("SFU address");
        let client_addr: SocketAddr = CLIENT_ADDR.parse().expect("client address");
        let mut now = Instant::now();
        let mut leg = Leg::new(sfu_addr, now).expect("leg");
        // A participant that publishes audio, like the load bench's.
        let mut client =
            Client::new("p", client_addr, &[Publish::audio(0x5000)], now).expect("client");
        let offer = client.offer(now).expect("client offer");
        let answer = leg.accept_offer(&offer, now).expect("leg answer");
        client
            .apply_answer(&answer, now)
            .expect("client applies answer");

        let start = now;
        let (mut leg_up, mut client_up) = (false, false);
        while !(leg_up && client_up) {
            assert!(now - start < SETUP_LIMIT, "rtc: no connection");
            rtc_exchange(&mut leg, &mut client, now);
            while let Some(output) = leg.poll_output() {
                leg_up |= matches!(output, LegOutput::Connected);
            }
            while let Some(event) = client.poll_event() {
                client_up |= matches!(event, sotto_sfu::client::ClientEvent::Connected);
            }
            now = rtc_step(&mut leg, &mut client, now);
        }

        // The forwarded stream: an SFU offer, the participant's answer.
        let track = leg
            .add_send_track_with_codec(stream.codec, "publisher", "publisher-0", 0xF000)
            .expect("send track");
        let offer = leg.create_offer(now).expect("SFU offer");
        let answer = client.accept_offer(&offer, now).expect("client answer");
        leg.accept_answer(&answer, now).expect("SFU applies answer");
        rtc_exchange(&mut leg, &mut client, now);
        while leg.poll_output().is_some() {}
        while client.poll_event().is_some() {}
        let audio_level_id = (stream.codec == Codec::Opus)
            .then(|| extmap_id(&offer, rtc::sdp::extmap::AUDIO_LEVEL_URI))
            .flatten();
        let client_next = client.poll_timeout();
        RtcPath {
            leg,
            client,
            track,
            audio_level_id,
            stream,
            payload: Bytes::from(stream.payload_bytes()),
            now,
            seq: 0,
            timestamp: 0,
            to_client: Vec::new(),
            client_next,
            wire: Wire::default(),
        }
    }

    fn packet(&self) -> rtc::rtp::Packet {
        let mut packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                marker: self.stream.is_video() && self.seq % 3 == 2,
                ..Default::default()
            },
            payload: self.payload.clone(),
        };
        // As the SFU core forwards Opus: the audio level, under the subscriber's id.
        if let Some(id) = self.audio_level_id {
            packet.header.extension = true;
            packet.header.extension_profile = 0xBEDE;
            packet
                .header
                .set_extension(id, Bytes::from_static(&[0x80 | 30]))
                .expect("audio level extension");
        }
        packet
    }
}

/// Moves datagrams both ways until neither side has any (setup only).
fn rtc_exchange(leg: &mut Leg, client: &mut Client, now: Instant) {
    loop {
        let mut moved = false;
        while let Some(transmit) = client.poll_transmit() {
            moved = true;
            let _ = leg.handle_datagram(now, client.addr(), &transmit.payload);
        }
        while let Some(transmit) = leg.poll_transmit() {
            moved = true;
            let _ = client.handle_datagram(now, leg.local_addr(), &transmit.payload);
        }
        if !moved {
            return;
        }
    }
}

/// Advances the setup clock by at most 10 ms, or to the next deadline, and runs timers.
fn rtc_step(leg: &mut Leg, client: &mut Client, now: Instant) -> Instant {
    let step = now + Duration::from_millis(10);
    let next = [leg.poll_timeout(), client.poll_timeout()]
        .into_iter()
        .flatten()
        .min()
        .map_or(step, |due| due.clamp(now, step));
    if leg.poll_timeout().is_some_and(|due| due <= next) {
        leg.handle_timeout(next).expect("leg timers");
    }
    if client.poll_timeout().is_some_and(|due| due <= next) {
        client.handle_timeout(next).expect("client timers");
    }
    next
}

impl Path for RtcPath {
    fn forward(&mut self) {
        self.now += self.stream.interval;
        let now = self.now;
        if self.leg.poll_timeout().is_some_and(|due| due <= now) {
            self.leg.handle_timeout(now).expect("leg timers");
            while self.leg.poll_output().is_some() {}
        }
        let packet = self.packet();
        self.leg
            .write_rtp(self.track, black_box(packet), now)
            .expect("write_rtp");
        while let Some(transmit) = self.leg.poll_transmit() {
            if self.wire.count(&transmit.payload) {
                self.to_client.push(transmit.payload);
            }
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.stream.ticks);
    }

    fn client_due(&self) -> bool {
        !self.to_client.is_empty() || self.client_next.is_some_and(|due| due <= self.now)
    }

    fn run_client(&mut self) {
        let now = self.now;
        let (sfu_addr, client_addr) = (self.leg.local_addr(), self.client.addr());
        if self.client.poll_timeout().is_some_and(|due| due <= now) {
            self.client.handle_timeout(now).expect("client timers");
        }
        loop {
            let mut moved = false;
            for datagram in self.to_client.drain(..) {
                let _ = self.client.handle_datagram(now, sfu_addr, &datagram);
            }
            while let Some(transmit) = self.client.poll_transmit() {
                match classify(&transmit.payload) {
                    Datagram::Stun | Datagram::Dtls => {
                        let _ = self
                            .leg
                            .handle_datagram(now, client_addr, &transmit.payload);
                        moved = true;
                    }
                    _ => self.wire.feedback_dropped += 1,
                }
            }
            while self.leg.poll_output().is_some() {}
            while let Some(transmit) = self.leg.poll_transmit() {
                if self.wire.count(&transmit.payload) {
                    self.to_client.push(transmit.payload);
                }
            }
            if !moved {
                break;
            }
        }
        while self.client.poll_event().is_some() {}
        self.client_next = self.client.poll_timeout();
    }

    fn wire(&self) -> Wire {
        self.wire
    }
}
