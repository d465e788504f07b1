//! The SFU's side of SDP for the transport it owns (issue 19), sans-IO: a participant's
//! offer is parsed (rtc's `sdp` crate does the grammar) and answered, and the SFU writes
//! its own offers when it starts forwarding a stream to the participant. What it owns:
//! the m-sections of one participant's session in order, the payload types and
//! header-extension ids that hold across the whole BUNDLE, and which sections the
//! participant publishes on and which the SFU sends on. What it must not touch: media,
//! transports, rooms.
//!
//! What is negotiated (as today's legs do): Opus (with RED over it where offered), VP8
//! and H.264 constrained baseline (packetization mode 1), each video codec with RTX;
//! feedback `transport-cc` (audio and video), `nack`, `nack pli` and `ccm fir` (video);
//! header extensions audio level, transport-wide cc, `sdes:mid`, `rtp-stream-id`,
//! `repaired-rtp-stream-id` and the dependency descriptor. The SFU is ICE-lite with one
//! host candidate, and the DTLS server (`a=setup:passive`).
//!
//! Numbers: a browser keeps the payload types and extension ids it chose for the whole
//! session, and JSEP wants one meaning per number across a BUNDLE. So the participant's
//! numbers from its first offer become the session's; the SFU's defaults fill in only
//! codecs and extensions the participant has not named, on numbers it does not use.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;
use rtc::sdp::extmap::{
    AUDIO_LEVEL_URI, SDES_MID_URI, SDES_REPAIR_RTP_STREAM_ID_URI, SDES_RTP_STREAM_ID_URI,
    TRANSPORT_CC_URI,
};
use rtc::sdp::util::Codec as SdpCodec;

use crate::core::transport::{Fingerprint, TransportError};
use crate::layers::DEPENDENCY_DESCRIPTOR_URI;
use crate::leg::Codec;

/// Opus parameters, exactly as the engine offers them.
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;usedtx=1";
/// H.264 parameters: constrained baseline 3.1, non-interleaved.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// The profile part of constrained baseline's profile-level-id (the level is free).
const H264_CONSTRAINED_BASELINE: &str = "42e0";

/// The header extensions the SFU reads or writes, by URI.
const EXTENSIONS: [&str; 6] = [
    AUDIO_LEVEL_URI,
    TRANSPORT_CC_URI,
    SDES_MID_URI,
    SDES_RTP_STREAM_ID_URI,
    SDES_REPAIR_RTP_STREAM_ID_URI,
    DEPENDENCY_DESCRIPTOR_URI,
];

/// The header extensions a forwarded copy carries (see `write_section`).
const FORWARDED_EXTENSIONS: [&str; 3] = [AUDIO_LEVEL_URI, TRANSPORT_CC_URI, SDES_MID_URI];

/// Which extensions apply to a kind of media.
fn extension_applies(uri: &str, kind: Kind) -> bool {
    match kind {
        Kind::Audio => [AUDIO_LEVEL_URI, TRANSPORT_CC_URI, SDES_MID_URI].contains(&uri),
        Kind::Video => uri != AUDIO_LEVEL_URI,
    }
}

/// Why a description was refused.
#[derive(Debug, thiserror::Error)]
pub enum SdpError {
    /// Not SDP, as far as rtc's parser goes.
    #[error("SDP does not parse: {0}")]
    Parse(String),
    /// A required attribute is missing.
    #[error("SDP without {0}")]
    Missing(&'static str),
    /// The fingerprint does not parse or changed within the session.
    #[error(transparent)]
    Fingerprint(#[from] TransportError),
    /// The participant asked for something the SFU does not do.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// An answer arrived with no offer of ours outstanding, or did not match it.
    #[error("an answer that does not match our offer: {0}")]
    Mismatch(&'static str),
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }
}

/// The SFU's own ICE and DTLS parameters, the same in every section.
#[derive(Clone)]
pub struct LocalParameters {
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`.
    pub password: String,
    /// `a=fingerprint` (`sha-256 AB:…`).
    pub fingerprint: String,
    /// The one host candidate: the SFU's UDP address.
    pub candidate: SocketAddr,
}

impl std::fmt::Debug for LocalParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalParameters")
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

/// One codec as negotiated in a section: its payload type and its RTX's, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The codec.
    pub codec: Codec,
    /// Its payload type in this session.
    pub payload_type: u8,
    /// Its RTX payload type, if RTX was negotiated for it.
    pub rtx_payload_type: Option<u8>,
}

/// The ids of the header extensions negotiated in a section (`None`: not negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    /// RFC 6464 audio level.
    pub audio_level: Option<u8>,
    /// Transport-wide sequence numbers.
    pub transport_cc: Option<u8>,
    /// `sdes:mid`.
    pub mid: Option<u8>,
    /// `sdes:rtp-stream-id`.
    pub rid: Option<u8>,
    /// `sdes:repaired-rtp-stream-id`.
    pub repaired_rid: Option<u8>,
    /// The AV1 dependency descriptor.
    pub dependency_descriptor: Option<u8>,
}

impl ExtensionIds {
    fn set(&mut self, uri: &str, id: u8) {
        let slot = match uri {
            AUDIO_LEVEL_URI => &mut self.audio_level,
            TRANSPORT_CC_URI => &mut self.transport_cc,
            SDES_MID_URI => &mut self.mid,
            SDES_RTP_STREAM_ID_URI => &mut self.rid,
            SDES_REPAIR_RTP_STREAM_ID_URI => &mut self.repaired_rid,
            DEPENDENCY_DESCRIPTOR_URI => &mut self.dependency_descriptor,
            _ => return,
        };
        *slot = Some(id);
    }
}

/// A section the participant publishes on: what the SFU will receive there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its mid.
    pub mid: String,
    /// Audio or video.
    pub kind: Kind,
    /// The codecs accepted, in the participant's order of preference.
    pub formats: Vec<Format>,
    /// RED's payload type, when RED over Opus was accepted.
    pub red_payload_type: Option<u8>,
    /// The header extensions.
    pub extensions: ExtensionIds,
    /// Simulcast layers by RTP stream id, as offered (`a=simulcast:send`), or empty.
    pub rids: Vec<String>,
    /// SSRCs the participant announced (`a=ssrc`), media first, with their RTX SSRC from
    /// `a=ssrc-group:FID`.
    pub ssrcs: Vec<(u32, Option<u32>)>,
    /// `a=msid`: stream and track id.
    pub msid: Option<(String, String)>,
}

/// A stream the SFU forwards to the participant in a section of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sending {
    /// Its mid.
    pub mid: String,
    /// The codec forwarded.
    pub codec: Codec,
    /// Whether RED over Opus is offered with it.
    pub red: bool,
    /// The SSRC the SFU sends it with.
    pub ssrc: u32,
    /// The SSRC of its retransmissions (video).
    pub rtx_ssrc: Option<u32>,
    /// `a=msid` stream id (whose stream it is).
    pub stream_id: String,
    /// `a=msid` track id.
    pub track_id: String,
    /// What the participant's answer accepted: the formats with its payload types and
    /// its extension ids; `None` until answered, or when it refused the section.
    pub accepted: Option<(Format, Option<u8>, ExtensionIds)>,
}

/// One m-section of a participant's session.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Section {
    /// The participant sends; the SFU receives.
    Published(Published),
    /// The SFU sends; the participant receives.
    Sending(Sending),
    /// Offered to receive only (a listener's transceiver): answered inactive but whole,
    /// so ICE and DTLS have a section to run on when it is the only one (the SFU's
    /// streams come in sections of their own).
    Idle(Published),
    /// Refused or stopped (port 0); kept so the m-line order holds.
    Closed { mid: String, kind: Option<Kind> },
}

impl Section {
    fn mid(&self) -> &str {
        match self {
            Section::Published(p) | Section::Idle(p) => &p.mid,
            Section::Sending(s) => &s.mid,
            Section::Closed { mid, .. } => mid,
        }
    }
}

/// One participant's SDP session with the SFU.
#[derive(Debug)]
pub struct Negotiation {
    local: LocalParameters,
    session_id: u64,
    version: u64,
    remote_fingerprint: Option<Fingerprint>,
    remote_ufrag: Option<String>,
    sections: Vec<Section>,
    /// Payload type → its meaning in this session ("opus", "red", "VP8", "rtx/96", …).
    payload_types: BTreeMap<u8, String>,
    /// Extension URI → id in this session.
    extension_ids: BTreeMap<String, u8>,
    /// Whether an offer of ours is outstanding.
    offer_outstanding: bool,
    /// How many sections that offer had (sections added since wait for the next one).
    offered_sections: usize,
    /// How many sections the participant knows (from its last offer or ours); sections
    /// after these are pending for our next offer.
    known: usize,
}

/// The SFU's answer to a participant's offer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The SDP to send back.
    pub sdp: String,
    /// The sections the participant publishes on, after this offer.
    pub published: Vec<Published>,
    /// The participant's ICE ufrag (it changes on an ICE restart).
    pub remote_ufrag: String,
}

impl Negotiation {
    /// A session whose SDP carries `local`'s ICE and DTLS parameters; `session_id` is the
    /// `o=` line's (from the caller's seeded random source).
    pub fn new(local: LocalParameters, session_id: u64) -> Negotiation {
        Negotiation {
            local,
            session_id: session_id & (i64::MAX as u64),
            version: 1,
            remote_fingerprint: None,
            remote_ufrag: None,
            sections: Vec::new(),
            payload_types: BTreeMap::new(),
            extension_ids: BTreeMap::new(),
            offer_outstanding: false,
            offered_sections: 0,
            known: 0,
        }
    }

    /// An offer of ours awaits the participant's answer.
    pub fn offer_outstanding(&self) -> bool {
        self.offer_outstanding
    }

    /// The participant's certificate fingerprint, once an offer gave it.
    pub fn remote_fingerprint(&self) -> Option<&Fingerprint> {
        self.remote_fingerprint.as_ref()
    }

    /// The sections the participant publishes on.
    pub fn published(&self) -> Vec<Published> {
        self.sections
            .iter()
            .filter_map(|s| match s {
                Section::Published(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// The sections the SFU sends on.
    pub fn sending(&self) -> Vec<Sending> {
        self.sections
            .iter()
            .filter_map(|s| match s {
                Section::Sending(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// Applies the participant's offer and writes the SFU's answer. A re-offer may add
    /// sections, stop them (port 0) or restart ICE; a changed certificate is refused.
    pub fn accept_offer(&mut self, offer: &str) -> Result<Answer, SdpError> {
        let parsed = parse(offer)?;
        let ufrag = attribute(&parsed, "ice-ufrag").ok_or(SdpError::Missing("ice-ufrag"))?;
        let fingerprint = Fingerprint::parse(
            attribute(&parsed, "fingerprint").ok_or(SdpError::Missing("fingerprint"))?,
        )?;
        if let Some(known) = &self.remote_fingerprint
            && *known != fingerprint
        {
            return Err(SdpError::Unsupported(
                "a new DTLS certificate within a session",
            ));
        }
        match attribute(&parsed, "setup") {
            Some("actpass" | "active") | None => {}
            Some(_) => return Err(SdpError::Unsupported("the SFU is the DTLS server")),
        }
        // The participant's numbers become the session's (first come, first kept).
        for media in &parsed.media_descriptions {
            self.learn_numbers(media);
        }
        let pending: Vec<Section> = self
            .sections
            .get(self.known..)
            .map(<[Section]>::to_vec)
            .unwrap_or_default();
        let mut sections = Vec::new();
        for media in &parsed.media_descriptions {
            let mid = media_attribute(media, "mid")
                .ok_or(SdpError::Missing("mid"))?
                .to_owned();
            let known = self.sections.iter().position(|s| s.mid() == mid);
            let section = match known.map(|i| &self.sections[i]) {
                // Our own sending sections come back in the participant's re-offers.
                Some(Section::Sending(sending)) if media.media_name.port.value != 0 => {
                    Section::Sending(sending.clone())
                }
                _ => self.answer_section(media, mid)?,
            };
            sections.push(section);
        }
        // Sections it knew that the offer left out would break the m-line order.
        if sections.len() < self.known {
            return Err(SdpError::Unsupported("an offer that drops m-sections"));
        }
        let answered = sections.len();
        // Ours that it does not know yet (their mids are ours alone: `s<n>`) follow, for
        // our next offer.
        sections.extend(pending);
        self.sections = sections;
        self.known = answered;
        self.remote_fingerprint = Some(fingerprint);
        self.remote_ufrag = Some(ufrag.to_owned());
        self.version += 1;
        Ok(Answer {
            sdp: self.write(false, answered),
            published: self.published(),
            remote_ufrag: ufrag.to_owned(),
        })
    }

    /// Adds a stream for the SFU to forward to the participant, in a section of its own;
    /// it takes effect with the next [`Negotiation::create_offer`] and its answer.
    /// Returns the section's mid.
    pub fn add_sending(
        &mut self,
        codec: Codec,
        red: bool,
        ssrc: u32,
        stream_id: &str,
        track_id: &str,
    ) -> String {
        let mid = self.next_mid();
        let rtx_ssrc = (codec != Codec::Opus).then(|| ssrc.wrapping_add(1));
        self.sections.push(Section::Sending(Sending {
            mid: mid.clone(),
            codec,
            red: red && codec == Codec::Opus,
            ssrc,
            rtx_ssrc,
            stream_id: stream_id.to_owned(),
            track_id: track_id.to_owned(),
            accepted: None,
        }));
        mid
    }

    /// The SFU's offer: every section so far, in order. Needs the participant's first
    /// offer (the session starts with it).
    pub fn create_offer(&mut self) -> Result<String, SdpError> {
        if self.remote_fingerprint.is_none() {
            return Err(SdpError::Mismatch("the participant has not offered yet"));
        }
        // Numbers for what the participant has not named yet.
        let codecs: Vec<(Codec, bool)> = self
            .sections
            .iter()
            .filter_map(|s| match s {
                Section::Sending(s) => Some((s.codec, s.red)),
                _ => None,
            })
            .collect();
        for (codec, red) in codecs {
            self.number_for(codec_name(codec), default_payload_type(codec));
            if let Some(rtx) = crate::leg::Codec::rtx_payload_type(codec) {
                let apt = self.payload_type_of(codec_name(codec));
                if let Some(apt) = apt {
                    self.number_for(&format!("rtx/{apt}"), rtx);
                }
            }
            if red {
                self.number_for("red", crate::leg::RED_PAYLOAD_TYPE);
            }
        }
        for uri in EXTENSIONS {
            self.extension_id_for(uri);
        }
        self.version += 1;
        self.offer_outstanding = true;
        self.offered_sections = self.sections.len();
        self.known = self.sections.len();
        Ok(self.write(true, self.sections.len()))
    }

    /// The participant's answer to our offer: records, per sending section, the payload
    /// types and extension ids it will read with.
    pub fn accept_answer(&mut self, answer: &str) -> Result<Vec<Sending>, SdpError> {
        if !self.offer_outstanding {
            return Err(SdpError::Mismatch("no offer outstanding"));
        }
        let parsed = parse(answer)?;
        if parsed.media_descriptions.len() != self.offered_sections {
            return Err(SdpError::Mismatch("a different number of m-sections"));
        }
        // `a=setup` in the answer is not read: the association from the participant's
        // first offer stays (no DTLS restart without an ICE restart and a new
        // certificate), and rtc 0.21 answers a re-offer's `actpass` with `passive` even
        // while it is the DTLS client.
        for (media, section) in parsed.media_descriptions.iter().zip(&mut self.sections) {
            if media_attribute(media, "mid") != Some(section.mid()) {
                return Err(SdpError::Mismatch("m-sections out of order"));
            }
            let Section::Sending(sending) = section else {
                continue;
            };
            if media.media_name.port.value == 0 || direction(media) == "inactive" {
                sending.accepted = None;
                continue;
            }
            let codecs = media.codecs();
            let format = codecs
                .values()
                .find(|c| codec_of(c, kind_of(sending.codec)) == Some(sending.codec))
                .map(|c| Format {
                    codec: sending.codec,
                    payload_type: c.payload_type,
                    rtx_payload_type: rtx_for(&codecs, c.payload_type),
                })
                .ok_or(SdpError::Mismatch("the forwarded codec was refused"))?;
            let red = sending
                .red
                .then(|| red_for(&codecs, format.payload_type))
                .flatten();
            let mut extensions = ExtensionIds::default();
            for (uri, id) in extmaps(media) {
                extensions.set(&uri, id);
            }
            sending.accepted = Some((format, red, extensions));
        }
        self.offer_outstanding = false;
        Ok(self.sending())
    }

    /// A mid for a section of ours: `s<n>`, a namespace browsers' own (numbers) never
    /// use, so a section the participant adds in a re-offer cannot take it.
    fn next_mid(&self) -> String {
        let mut n = self.sections.len();
        loop {
            let mid = format!("s{n}");
            if self.sections.iter().all(|s| s.mid() != mid) {
                return mid;
            }
            n += 1;
        }
    }

    /// Takes the participant's payload types and extension ids for what we understand.
    fn learn_numbers(&mut self, media: &MediaDescription) {
        let codecs = media.codecs();
        let kind = match media.media_name.media.as_str() {
            "audio" => Kind::Audio,
            "video" => Kind::Video,
            _ => return,
        };
        for codec in codecs.values() {
            let meaning = match codec_of(codec, kind) {
                Some(c) => codec_name(c).to_owned(),
                None if codec.name.eq_ignore_ascii_case("red") => "red".to_owned(),
                None if codec.name.eq_ignore_ascii_case("rtx") => match apt(codec) {
                    Some(apt) => format!("rtx/{apt}"),
                    None => continue,
                },
                // Anything else keeps its number reserved, under its own name.
                None => format!("other/{}", codec.name),
            };
            if !self.payload_types.contains_key(&codec.payload_type)
                && !self.payload_types.values().any(|m| *m == meaning)
            {
                self.payload_types.insert(codec.payload_type, meaning);
            }
        }
        for (uri, id) in extmaps(media) {
            if !self.extension_ids.contains_key(&uri)
                && !self.extension_ids.values().any(|i| *i == id)
            {
                self.extension_ids.insert(uri, id);
            }
        }
    }

    fn payload_type_of(&self, meaning: &str) -> Option<u8> {
        self.payload_types
            .iter()
            .find(|(_, m)| m.as_str() == meaning)
            .map(|(pt, _)| *pt)
    }

    /// The session's number for `meaning`, taking `preferred` or a free dynamic one.
    fn number_for(&mut self, meaning: &str, preferred: u8) -> u8 {
        if let Some(pt) = self.payload_type_of(meaning) {
            return pt;
        }
        let pt = std::iter::once(preferred)
            .chain(96..=127)
            .find(|pt| !self.payload_types.contains_key(pt))
            .unwrap_or(preferred);
        self.payload_types.insert(pt, meaning.to_owned());
        pt
    }

    fn extension_id_for(&mut self, uri: &str) -> u8 {
        if let Some(id) = self.extension_ids.get(uri) {
            return *id;
        }
        let id = (1..=14u8)
            .find(|id| !self.extension_ids.values().any(|i| i == id))
            .unwrap_or(14);
        self.extension_ids.insert(uri.to_owned(), id);
        id
    }

    /// Answers one offered section: what the SFU receives there, or a refusal.
    fn answer_section(&self, media: &MediaDescription, mid: String) -> Result<Section, SdpError> {
        let kind = match media.media_name.media.as_str() {
            "audio" => Kind::Audio,
            "video" => Kind::Video,
            // Data channels and anything else: refused (the SFU carries no data).
            _ => return Ok(Section::Closed { mid, kind: None }),
        };
        let closed = Section::Closed {
            mid: mid.clone(),
            kind: Some(kind),
        };
        if media.media_name.port.value == 0 {
            return Ok(closed);
        }
        let publishing = ["sendrecv", "sendonly"].contains(&direction(media));
        if !media.has_attribute("rtcp-mux") {
            return Err(SdpError::Unsupported("RTCP without rtcp-mux"));
        }
        let codecs = media.codecs();
        // In the participant's order of preference: the m= line's format order.
        let mut formats = Vec::new();
        for pt in &media.media_name.formats {
            let Some(codec) = pt.parse::<u8>().ok().and_then(|pt| codecs.get(&pt)) else {
                continue;
            };
            if let Some(ours) = codec_of(codec, kind) {
                formats.push(Format {
                    codec: ours,
                    payload_type: codec.payload_type,
                    rtx_payload_type: rtx_for(&codecs, codec.payload_type),
                });
            }
        }
        let Some(first) = formats.first() else {
            return Ok(closed);
        };
        let red_payload_type = (first.codec == Codec::Opus)
            .then(|| red_for(&codecs, first.payload_type))
            .flatten();
        let mut extensions = ExtensionIds::default();
        for (uri, id) in extmaps(media) {
            if extension_applies(&uri, kind) {
                extensions.set(&uri, id);
            }
        }
        let rids = media_attribute(media, "simulcast")
            .and_then(|value| value.strip_prefix("send "))
            .map(|list| {
                list.split([';', ','])
                    .map(|rid| rid.trim_start_matches('~').to_owned())
                    .filter(|rid| !rid.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let section = Published {
            mid,
            kind,
            formats,
            red_payload_type,
            extensions,
            rids,
            ssrcs: ssrcs(media),
            msid: media_attribute(media, "msid").and_then(|value| {
                let (stream, track) = value.split_once(' ')?;
                Some((stream.to_owned(), track.to_owned()))
            }),
        };
        Ok(if publishing {
            Section::Published(section)
        } else {
            Section::Idle(Published {
                rids: Vec::new(),
                ssrcs: Vec::new(),
                ..section
            })
        })
    }

    /// Writes the whole session: an answer (`offer == false`) or an offer of ours.
    /// Writes the session's first `count` sections.
    fn write(&self, offer: bool, count: usize) -> String {
        let sections = &self.sections[..count.min(self.sections.len())];
        let mut sdp = String::new();
        let mut line = |text: &str| {
            sdp.push_str(text);
            sdp.push_str("\r\n");
        };
        line("v=0");
        line(&format!(
            "o=- {} {} IN IP4 0.0.0.0",
            self.session_id, self.version
        ));
        line("s=-");
        line("t=0 0");
        line("a=ice-lite");
        line("a=msid-semantic:WMS *");
        line("a=extmap-allow-mixed");
        let bundle: Vec<&str> = sections
            .iter()
            .filter(|s| !matches!(s, Section::Closed { .. }))
            .map(Section::mid)
            .collect();
        if !bundle.is_empty() {
            line(&format!("a=group:BUNDLE {}", bundle.join(" ")));
        }
        for section in sections {
            for text in self.write_section(section, offer) {
                line(&text);
            }
        }
        sdp
    }

    fn write_section(&self, section: &Section, offer: bool) -> Vec<String> {
        let (kind, formats, red, direction, extensions) = match section {
            Section::Closed { mid, kind } => {
                let kind = kind.map_or("application", Kind::name);
                return vec![
                    format!("m={kind} 0 UDP/TLS/RTP/SAVPF 0"),
                    "c=IN IP4 0.0.0.0".to_owned(),
                    format!("a=mid:{mid}"),
                    "a=inactive".to_owned(),
                ];
            }
            Section::Published(p) | Section::Idle(p) => (
                p.kind,
                p.formats.clone(),
                p.red_payload_type,
                if matches!(section, Section::Idle(_)) {
                    "inactive"
                } else {
                    "recvonly"
                },
                p.extensions,
            ),
            Section::Sending(s) => {
                let kind = kind_of(s.codec);
                let (format, red) = match &s.accepted {
                    Some((format, red, _)) => (*format, *red),
                    None => {
                        let pt = self.payload_type_of(codec_name(s.codec)).unwrap_or(0);
                        let format = Format {
                            codec: s.codec,
                            payload_type: pt,
                            rtx_payload_type: self.payload_type_of(&format!("rtx/{pt}")),
                        };
                        let red = s.red.then(|| self.payload_type_of("red")).flatten();
                        (format, red)
                    }
                };
                let mut extensions = ExtensionIds::default();
                // What forwarded copies carry: the audio level, transport-wide numbers and
                // the mid. Not the simulcast ids (a subscriber sees one stream), nor the
                // dependency descriptor: a publisher's descriptor no longer describes the
                // stream after a layer switch, and Chromium assembles frames by it when it
                // is negotiated (it decoded nothing of forwarded VP8 with it).
                for (uri, id) in &self.extension_ids {
                    if extension_applies(uri, kind) && FORWARDED_EXTENSIONS.contains(&uri.as_str())
                    {
                        extensions.set(uri, *id);
                    }
                }
                (kind, vec![format], red, "sendonly", extensions)
            }
        };
        let mut pts: Vec<u8> = Vec::new();
        for format in &formats {
            pts.push(format.payload_type);
            pts.extend(format.rtx_payload_type);
        }
        // RED goes first where the participant listed it first; it is Opus with copies.
        if let Some(red) = red {
            pts.insert(0, red);
        }
        let pt_list: Vec<String> = pts.iter().map(u8::to_string).collect();
        let mut out = vec![
            format!(
                "m={} 9 UDP/TLS/RTP/SAVPF {}",
                kind.name(),
                pt_list.join(" ")
            ),
            "c=IN IP4 0.0.0.0".to_owned(),
            format!("a=mid:{}", section.mid()),
            format!("a=ice-ufrag:{}", self.local.ufrag),
            format!("a=ice-pwd:{}", self.local.password),
            format!("a=fingerprint:{}", self.local.fingerprint),
            format!("a=setup:{}", if offer { "actpass" } else { "passive" }),
            format!("a={direction}"),
            "a=rtcp-mux".to_owned(),
            "a=rtcp-rsize".to_owned(),
        ];
        for (uri, id) in extension_list(&extensions) {
            out.push(format!("a=extmap:{id} {uri}"));
        }
        if let Some(red) = red
            && let Some(opus) = formats.first()
        {
            out.push(format!("a=rtpmap:{red} red/48000/2"));
            out.push(format!(
                "a=fmtp:{red} {}/{}",
                opus.payload_type, opus.payload_type
            ));
        }
        for format in &formats {
            let pt = format.payload_type;
            match format.codec {
                Codec::Opus => {
                    out.push(format!("a=rtpmap:{pt} opus/48000/2"));
                    out.push(format!("a=fmtp:{pt} {OPUS_FMTP}"));
                    out.push(format!("a=rtcp-fb:{pt} transport-cc"));
                }
                Codec::Vp8 | Codec::H264 => {
                    out.push(format!("a=rtpmap:{pt} {}/90000", codec_name(format.codec)));
                    if format.codec == Codec::H264 {
                        out.push(format!("a=fmtp:{pt} {H264_FMTP}"));
                    }
                    for feedback in ["nack", "nack pli", "ccm fir", "transport-cc"] {
                        out.push(format!("a=rtcp-fb:{pt} {feedback}"));
                    }
                    if let Some(rtx) = format.rtx_payload_type {
                        out.push(format!("a=rtpmap:{rtx} rtx/90000"));
                        out.push(format!("a=fmtp:{rtx} apt={pt}"));
                    }
                }
            }
        }
        match section {
            Section::Published(p) if !p.rids.is_empty() => {
                for rid in &p.rids {
                    out.push(format!("a=rid:{rid} recv"));
                }
                out.push(format!("a=simulcast:recv {}", p.rids.join(";")));
            }
            Section::Sending(s) => {
                out.push(format!("a=msid:{} {}", s.stream_id, s.track_id));
                if let Some(rtx) = s.rtx_ssrc {
                    out.push(format!("a=ssrc-group:FID {} {rtx}", s.ssrc));
                }
                for ssrc in std::iter::once(s.ssrc).chain(s.rtx_ssrc) {
                    out.push(format!("a=ssrc:{ssrc} cname:sotto-sfu"));
                    out.push(format!("a=ssrc:{ssrc} msid:{} {}", s.stream_id, s.track_id));
                }
            }
            _ => {}
        }
        let candidate = self.local.candidate;
        let ip_version = if candidate.is_ipv4() { 1 } else { 2 };
        out.push(format!(
            "a=candidate:{ip_version} 1 udp 2130706431 {} {} typ host",
            candidate.ip(),
            candidate.port()
        ));
        out.push("a=end-of-candidates".to_owned());
        out
    }
}

/// The extensions of a section as (uri, id) pairs.
fn extension_list(ids: &ExtensionIds) -> Vec<(&'static str, u8)> {
    [
        (AUDIO_LEVEL_URI, ids.audio_level),
        (TRANSPORT_CC_URI, ids.transport_cc),
        (SDES_MID_URI, ids.mid),
        (SDES_RTP_STREAM_ID_URI, ids.rid),
        (SDES_REPAIR_RTP_STREAM_ID_URI, ids.repaired_rid),
        (DEPENDENCY_DESCRIPTOR_URI, ids.dependency_descriptor),
    ]
    .into_iter()
    .filter_map(|(uri, id)| id.map(|id| (uri, id)))
    .collect()
}

fn parse(sdp: &str) -> Result<SessionDescription, SdpError> {
    SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| SdpError::Parse(e.to_string()))
}

/// A session attribute, or the first media section's that has it (browsers put ICE and
/// DTLS parameters in each section).
fn attribute<'a>(session: &'a SessionDescription, key: &str) -> Option<&'a str> {
    session.attribute(key).map(String::as_str).or_else(|| {
        session
            .media_descriptions
            .iter()
            .find_map(|m| media_attribute(m, key))
    })
}

fn media_attribute<'a>(media: &'a MediaDescription, key: &str) -> Option<&'a str> {
    media.attribute(key).flatten()
}

fn direction(media: &MediaDescription) -> &'static str {
    ["sendrecv", "sendonly", "recvonly", "inactive"]
        .into_iter()
        .find(|d| media.has_attribute(d))
        .unwrap_or("sendrecv")
}

/// `a=extmap` lines as (uri, id), for the URIs the SFU knows.
fn extmaps(media: &MediaDescription) -> Vec<(String, u8)> {
    media
        .attributes
        .iter()
        .filter(|a| a.key == "extmap")
        .filter_map(|a| {
            let value = a.value.as_deref()?;
            let (id, rest) = value.split_once(' ')?;
            // `id/direction` is allowed; the direction is ignored.
            let id: u8 = id.split('/').next()?.parse().ok()?;
            let uri = rest.split_whitespace().next()?;
            (EXTENSIONS.contains(&uri) && (1..=14).contains(&id)).then(|| (uri.to_owned(), id))
        })
        .collect()
}

/// `a=ssrc` ids in order of appearance, each with its FID (RTX) partner.
fn ssrcs(media: &MediaDescription) -> Vec<(u32, Option<u32>)> {
    let mut fid: Vec<(u32, u32)> = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    for a in &media.attributes {
        let Some(value) = a.value.as_deref() else {
            continue;
        };
        match a.key.as_str() {
            "ssrc-group" => {
                let mut parts = value.split_whitespace();
                if parts.next() == Some("FID")
                    && let (Some(Ok(media)), Some(Ok(rtx))) = (
                        parts.next().map(str::parse::<u32>),
                        parts.next().map(str::parse::<u32>),
                    )
                {
                    fid.push((media, rtx));
                }
            }
            "ssrc" => {
                if let Some(Ok(ssrc)) = value.split_whitespace().next().map(str::parse::<u32>)
                    && !seen.contains(&ssrc)
                {
                    seen.push(ssrc);
                }
            }
            _ => {}
        }
    }
    seen.into_iter()
        .filter(|ssrc| !fid.iter().any(|(_, rtx)| rtx == ssrc))
        .map(|ssrc| {
            let rtx = fid.iter().find(|(m, _)| *m == ssrc).map(|(_, rtx)| *rtx);
            (ssrc, rtx)
        })
        .collect()
}

fn kind_of(codec: Codec) -> Kind {
    match codec {
        Codec::Opus => Kind::Audio,
        Codec::Vp8 | Codec::H264 => Kind::Video,
    }
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "opus",
        Codec::Vp8 => "VP8",
        Codec::H264 => "H264",
    }
}

fn default_payload_type(codec: Codec) -> u8 {
    codec.payload_type()
}

/// Which of the SFU's codecs an offered one is, if any.
fn codec_of(codec: &SdpCodec, kind: Kind) -> Option<Codec> {
    let name = codec.name.to_ascii_lowercase();
    match (kind, name.as_str()) {
        (Kind::Audio, "opus") if codec.clock_rate == 48_000 => Some(Codec::Opus),
        (Kind::Video, "vp8") if codec.clock_rate == 90_000 => Some(Codec::Vp8),
        (Kind::Video, "h264") if codec.clock_rate == 90_000 => {
            let fmtp = fmtp_params(&codec.fmtp);
            let mode = fmtp.iter().find(|(k, _)| *k == "packetization-mode");
            let profile = fmtp.iter().find(|(k, _)| *k == "profile-level-id");
            let baseline = profile.is_some_and(|(_, v)| {
                v.len() == 6 && v[..4].eq_ignore_ascii_case(H264_CONSTRAINED_BASELINE)
            });
            (mode.is_some_and(|(_, v)| *v == "1") && baseline).then_some(Codec::H264)
        }
        _ => None,
    }
}

fn fmtp_params(fmtp: &str) -> Vec<(&str, &str)> {
    fmtp.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .collect()
}

fn apt(codec: &SdpCodec) -> Option<u8> {
    fmtp_params(&codec.fmtp)
        .into_iter()
        .find(|(k, _)| *k == "apt")
        .and_then(|(_, v)| v.parse().ok())
}

/// The RTX payload type whose `apt` is `pt`.
fn rtx_for(codecs: &std::collections::HashMap<u8, SdpCodec>, pt: u8) -> Option<u8> {
    codecs
        .values()
        .filter(|c| c.name.eq_ignore_ascii_case("rtx") && apt(c) == Some(pt))
        .map(|c| c.payload_type)
        .min()
}

/// RED's payload type when it carries Opus `pt` in every block (`pt/pt`).
fn red_for(codecs: &std::collections::HashMap<u8, SdpCodec>, pt: u8) -> Option<u8> {
    codecs
        .values()
        .filter(|c| c.name.eq_ignore_ascii_case("red"))
        .filter(|c| {
            let blocks: Vec<&str> = c.fmtp.split('/').collect();
            !blocks.is_empty() && blocks.iter().all(|b| b.trim() == pt.to_string())
        })
        .map(|c| c.payload_type)
        .min()
}

#[cfg(test)]
mod tests;
