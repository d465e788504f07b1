//! str0m 0.25: two `Rtc`s connected in memory, the SFU side ICE-lite in RTP mode.

use super::*;
use str0m::media::{Direction, MediaKind, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};

/// Two `Rtc`s: the SFU side (ICE-lite, RTP mode) with one send stream, and a client.
pub(crate) struct Str0mPath {
    sfu: Rtc,
    client: Rtc,
    sfu_addr: SocketAddr,
    client_addr: SocketAddr,
    ssrc: Ssrc,
    pt: Pt,
    stream: Stream,
    payload: Arc<[u8]>,
    now: Instant,
    seq: u64,
    timestamp: u32,
    to_client: Vec<Vec<u8>>,
    client_next: Instant,
    wire: Wire,
}

/// Feeds `datagram` to `rtc`.
fn str0m_receive(rtc: &mut Rtc, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
    if let Ok(receive) = Receive::new(Protocol::Udp, from, to, datagram) {
        let _ = rtc.handle_input(Input::Receive(now, receive));
    }
}

/// Drains `rtc` until it asks for a timeout: returns it, and passes every datagram to
/// `sink`.
fn str0m_drain(rtc: &mut Rtc, mut sink: impl FnMut(&[u8])) -> Instant {
    loop {
        match rtc.poll_output().expect("str0m poll_output") {
            Output::Timeout(at) => return at,
            Output::Transmit(transmit) => sink(&transmit.contents),
            Output::Event(_) => {}
        }
    }
}

impl Str0mPath {
    /// With str0m's defaults: no bandwidth estimation, so no pacer.
    pub(crate) fn new(stream: Stream) -> Str0mPath {
        Str0mPath::with_config(stream, RtcConfig::new())
    }

    /// With its send-side estimate on (TWCC history, delay- and loss-based control, and
    /// the pacer that comes with it), starting at 2 Mbit/s like a Sotto leg's GCC.
    pub(crate) fn with_bwe(stream: Stream) -> Str0mPath {
        Str0mPath::with_config(
            stream,
            RtcConfig::new().enable_bwe(Some(str0m::bwe::Bitrate::mbps(2))),
        )
    }

    fn with_config(stream: Stream, config: RtcConfig) -> Str0mPath {
        let sfu_addr: SocketAddr = SFU_ADDR.parse().expect("SFU address");
        let client_addr: SocketAddr = CLIENT_ADDR.parse().expect("client address");
        let mut now = Instant::now();
        let mut sfu = config.set_ice_lite(true).set_rtp_mode(true).build(now);
        let mut client = RtcConfig::new().build(now);
        sfu.add_local_candidate(Candidate::host(sfu_addr, "udp").expect("SFU candidate"));
        client.add_local_candidate(Candidate::host(client_addr, "udp").expect("client candidate"));

        // The participant offers the audio it publishes; the SFU side answers.
        let mut change = client.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().expect("client offer");
        let answer = sfu.sdp_api().accept_offer(offer).expect("SFU answer");
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("client applies answer");

        let start = now;
        let (mut to_sfu, mut to_client) = (Vec::<Vec<u8>>::new(), Vec::<Vec<u8>>::new());
        let mut sfu_next = now;
        let mut client_next = now;
        while !(sfu.is_connected() && client.is_connected()) {
            assert!(now - start < SETUP_LIMIT, "str0m: no connection");
            for datagram in to_sfu.drain(..) {
                str0m_receive(&mut sfu, now, client_addr, sfu_addr, &datagram);
            }
            for datagram in to_client.drain(..) {
                str0m_receive(&mut client, now, sfu_addr, client_addr, &datagram);
            }
            if sfu_next <= now {
                let _ = sfu.handle_input(Input::Timeout(now));
            }
            if client_next <= now {
                let _ = client.handle_input(Input::Timeout(now));
            }
            sfu_next = str0m_drain(&mut sfu, |d| to_client.push(d.to_vec()));
            client_next = str0m_drain(&mut client, |d| to_sfu.push(d.to_vec()));
            if to_sfu.is_empty() && to_client.is_empty() {
                now = sfu_next
                    .min(client_next)
                    .clamp(now, now + Duration::from_millis(10));
            }
        }

        // The forwarded stream: an SFU offer, the participant's answer.
        let kind = if stream.is_video() {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let mut change = sfu.sdp_api();
        let mid = change.add_media(
            kind,
            Direction::SendOnly,
            Some("publisher".into()),
            Some("publisher-0".into()),
            None,
        );
        let (offer, pending) = change.apply().expect("SFU offer");
        let answer = client.sdp_api().accept_offer(offer).expect("client answer");
        sfu.sdp_api()
            .accept_answer(pending, answer)
            .expect("SFU applies answer");
        let ssrc = sfu
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .expect("a send stream for the new m-line")
            .ssrc();
        let codec = if stream.is_video() {
            str0m::format::Codec::Vp8
        } else {
            str0m::format::Codec::Opus
        };
        let pt = sfu
            .codec_config()
            .find(|params| params.spec().codec == codec)
            .expect("codec configured")
            .pt();
        let _ = sfu.handle_input(Input::Timeout(now));
        let _ = client.handle_input(Input::Timeout(now));
        let mut path = Str0mPath {
            sfu,
            client,
            sfu_addr,
            client_addr,
            ssrc,
            pt,
            stream,
            payload: Arc::from(stream.payload_bytes()),
            now,
            seq: 0,
            timestamp: 0,
            to_client: Vec::new(),
            client_next: now,
            wire: Wire::default(),
        };
        let mut sfu_out = Vec::new();
        str0m_drain(&mut path.sfu, |d| sfu_out.push(d.to_vec()));
        path.to_client = sfu_out;
        path.run_client();
        path
    }
}

impl Path for Str0mPath {
    fn forward(&mut self) {
        self.now += self.stream.interval;
        let now = self.now;
        let video = self.stream.is_video();
        let ext_vals = if video {
            ExtensionValues::default()
        } else {
            ExtensionValues {
                audio_level: Some(-30),
                voice_activity: Some(true),
                ..Default::default()
            }
        };
        let write = RtpWrite::new(
            self.pt,
            self.seq.into(),
            self.timestamp,
            now,
            self.payload.clone(),
        )
        .marker(video && self.seq % 3 == 2)
        .nackable(video)
        .ext_vals(ext_vals);
        self.sfu
            .direct_api()
            .stream_tx(&self.ssrc)
            .expect("send stream")
            .write_rtp(black_box(write));
        // Time moves only through input: this stamps the packet and runs due timers.
        self.sfu
            .handle_input(Input::Timeout(now))
            .expect("str0m timeout");
        let (wire, to_client) = (&mut self.wire, &mut self.to_client);
        str0m_drain(&mut self.sfu, |datagram| {
            if wire.count(datagram) {
                to_client.push(datagram.to_vec());
            }
        });
        self.seq += 1;
        self.timestamp = self.timestamp.wrapping_add(self.stream.ticks);
    }

    fn client_due(&self) -> bool {
        !self.to_client.is_empty() || self.client_next <= self.now
    }

    fn run_client(&mut self) {
        let now = self.now;
        let _ = self.client.handle_input(Input::Timeout(now));
        loop {
            for datagram in std::mem::take(&mut self.to_client) {
                str0m_receive(
                    &mut self.client,
                    now,
                    self.sfu_addr,
                    self.client_addr,
                    &datagram,
                );
            }
            let mut to_sfu = Vec::new();
            let wire = &mut self.wire;
            self.client_next = str0m_drain(&mut self.client, |datagram| match classify(datagram) {
                Datagram::Stun | Datagram::Dtls => to_sfu.push(datagram.to_vec()),
                _ => wire.feedback_dropped += 1,
            });
            if to_sfu.is_empty() {
                break;
            }
            for datagram in to_sfu {
                str0m_receive(
                    &mut self.sfu,
                    now,
                    self.client_addr,
                    self.sfu_addr,
                    &datagram,
                );
            }
            let (wire, to_client) = (&mut self.wire, &mut self.to_client);
            str0m_drain(&mut self.sfu, |datagram| {
                if wire.count(datagram) {
                    to_client.push(datagram.to_vec());
                }
            });
        }
    }

    fn wire(&self) -> Wire {
        self.wire
    }
}
