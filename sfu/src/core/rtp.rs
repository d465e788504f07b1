//! RTP as the forwarding loop needs it (RFC 3550 §5.1, header extensions RFC 8285),
//! without allocating: [`RtpView`] reads a packet in place, and [`write_forwarded`] writes
//! one subscriber's copy into a reused buffer with the subscriber's SSRC, payload type,
//! numbering and header extensions. rtc's `rtp::Packet` parses into owned parts per
//! packet, which the loop cannot afford once per subscriber.
//!
//! A forwarded copy drops what the subscriber must not see: the publisher's CSRCs, its
//! padding, and extensions the SFU does not forward (the copy carries only the ones the
//! caller names, under the subscriber's ids).

use std::ops::Range;

/// Why a packet is not RTP the SFU can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than its header says.
    #[error("truncated RTP packet")]
    Truncated,
    /// Not version 2.
    #[error("not RTP version 2")]
    Version,
    /// Padding longer than the payload.
    #[error("bad RTP padding")]
    Padding,
    /// An extension value that does not fit its form (over 255 bytes).
    #[error("an extension value too long to write")]
    ExtensionTooLong,
}

/// The one-byte header-extension form's profile (RFC 8285 §4.2).
const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// The two-byte form's profile prefix (RFC 8285 §4.3); the low 4 bits are app bits.
const TWO_BYTE_PROFILE: u16 = 0x1000;
/// The longest value the one-byte form holds.
const ONE_BYTE_MAX: usize = 16;

/// A read-only view of one RTP packet.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    packet: &'a [u8],
    /// Where the extension block's elements are, and its profile.
    extension: Option<(u16, usize, usize)>,
    payload: (usize, usize),
}

impl<'a> RtpView<'a> {
    /// Reads `packet`'s header; checks lengths, nothing else.
    pub fn parse(packet: &'a [u8]) -> Result<RtpView<'a>, RtpError> {
        if packet.len() < 12 {
            return Err(RtpError::Truncated);
        }
        if packet[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let csrcs = usize::from(packet[0] & 0x0f);
        let mut at = 12 + 4 * csrcs;
        let mut extension = None;
        if packet[0] & 0x10 != 0 {
            let header = packet.get(at..at + 4).ok_or(RtpError::Truncated)?;
            let profile = u16::from_be_bytes([header[0], header[1]]);
            let words = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let start = at + 4;
            let end = start + 4 * words;
            if end > packet.len() {
                return Err(RtpError::Truncated);
            }
            extension = Some((profile, start, end));
            at = end;
        }
        if at > packet.len() {
            return Err(RtpError::Truncated);
        }
        let mut end = packet.len();
        if packet[0] & 0x20 != 0 {
            let padding = usize::from(*packet.last().ok_or(RtpError::Truncated)?);
            if padding == 0 || at + padding > end {
                return Err(RtpError::Padding);
            }
            end -= padding;
        }
        Ok(RtpView {
            packet,
            extension,
            payload: (at, end),
        })
    }

    /// The marker bit.
    pub fn marker(&self) -> bool {
        self.packet[1] & 0x80 != 0
    }

    /// The payload type.
    pub fn payload_type(&self) -> u8 {
        self.packet[1] & 0x7f
    }

    /// The sequence number.
    pub fn seq(&self) -> u16 {
        u16::from_be_bytes([self.packet[2], self.packet[3]])
    }

    /// The timestamp.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([
            self.packet[4],
            self.packet[5],
            self.packet[6],
            self.packet[7],
        ])
    }

    /// The SSRC.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([
            self.packet[8],
            self.packet[9],
            self.packet[10],
            self.packet[11],
        ])
    }

    /// The payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.packet[self.payload.0..self.payload.1]
    }

    /// Where the payload sits in the packet.
    pub fn payload_range(&self) -> Range<usize> {
        self.payload.0..self.payload.1
    }

    /// The value of header extension `id`, in either form; `None` if absent (or the
    /// block is malformed from there on: reading stops, nothing panics).
    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        self.extensions().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// Every header extension as (id, value), in order.
    pub fn extensions(&self) -> Extensions<'a> {
        match self.extension {
            Some((profile, start, end)) => Extensions {
                data: &self.packet[start..end],
                at: 0,
                two_byte: profile & 0xfff0 == TWO_BYTE_PROFILE,
                done: profile != ONE_BYTE_PROFILE && profile & 0xfff0 != TWO_BYTE_PROFILE,
            },
            None => Extensions {
                data: &[],
                at: 0,
                two_byte: false,
                done: true,
            },
        }
    }
}

/// An iterator over a packet's header extensions.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    data: &'a [u8],
    at: usize,
    two_byte: bool,
    done: bool,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        while !self.done && self.at < self.data.len() {
            let byte = self.data[self.at];
            if byte == 0 {
                // Padding between elements.
                self.at += 1;
                continue;
            }
            let (id, len, header) = if self.two_byte {
                let len = usize::from(*self.data.get(self.at + 1)?);
                (byte, len, 2)
            } else {
                let id = byte >> 4;
                if id == 15 {
                    // RFC 8285 §4.2: stop parsing.
                    self.done = true;
                    return None;
                }
                (id, usize::from(byte & 0x0f) + 1, 1)
            };
            let start = self.at + header;
            let Some(value) = self.data.get(start..start + len) else {
                self.done = true;
                return None;
            };
            self.at = start + len;
            return Some((id, value));
        }
        None
    }
}

/// The header fields a forwarded copy gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The subscriber's payload type for the codec.
    pub payload_type: u8,
    /// The rewritten sequence number.
    pub seq: u16,
    /// The rewritten timestamp.
    pub timestamp: u32,
    /// The SSRC the SFU sends this stream with.
    pub ssrc: u32,
    /// The marker bit, as the publisher set it.
    pub marker: bool,
}

/// Writes a packet into `out` (cleared first; its capacity is reused): `header`, then
/// `extensions` as (id, value) under the subscriber's ids, in the one-byte form when
/// every value fits it and the two-byte form otherwise, then `payload`.
pub fn write_forwarded(
    out: &mut Vec<u8>,
    header: Header,
    extensions: &[(u8, &[u8])],
    payload: &[u8],
) -> Result<(), RtpError> {
    out.clear();
    let has_extensions = !extensions.is_empty();
    out.push(0x80 | if has_extensions { 0x10 } else { 0 });
    out.push(header.payload_type & 0x7f | if header.marker { 0x80 } else { 0 });
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.ssrc.to_be_bytes());
    if has_extensions {
        let two_byte = extensions
            .iter()
            .any(|(id, v)| v.len() > ONE_BYTE_MAX || v.is_empty() || *id > 14);
        let profile = if two_byte {
            TWO_BYTE_PROFILE
        } else {
            ONE_BYTE_PROFILE
        };
        out.extend_from_slice(&profile.to_be_bytes());
        let length_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let start = out.len();
        for (id, value) in extensions {
            if two_byte {
                let len = u8::try_from(value.len()).map_err(|_| RtpError::ExtensionTooLong)?;
                out.push(*id);
                out.push(len);
            } else {
                out.push((id << 4) | (value.len() as u8 - 1));
            }
            out.extend_from_slice(value);
        }
        while !(out.len() - start).is_multiple_of(4) {
            out.push(0);
        }
        let words =
            u16::try_from((out.len() - start) / 4).map_err(|_| RtpError::ExtensionTooLong)?;
        out[length_at..length_at + 2].copy_from_slice(&words.to_be_bytes());
    }
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rtc's RTP writer makes the packet; our view reads it.
    fn rtc_packet(extensions: &[(u8, &[u8])], padding: u8, csrcs: usize) -> Vec<u8> {
        use rtc::shared::marshal::Marshal;
        let mut header = rtc::rtp::Header {
            version: 2,
            marker: true,
            payload_type: 111,
            sequence_number: 0xfffe,
            timestamp: 0xdead_beef,
            ssrc: 0x0102_0304,
            csrc: (0..csrcs as u32).collect(),
            ..Default::default()
        };
        if !extensions.is_empty() {
            header.extension = true;
            header.extension_profile = if extensions.iter().any(|(_, v)| v.len() > 16) {
                0x1000
            } else {
                0xBEDE
            };
            for (id, value) in extensions {
                header
                    .set_extension(*id, bytes::Bytes::copy_from_slice(value))
                    .expect("extension");
            }
        }
        let packet = rtc::rtp::Packet {
            header,
            payload: bytes::Bytes::from_static(b"opus-frame"),
        };
        let mut raw = packet.marshal().expect("marshal").to_vec();
        if padding > 0 {
            raw[0] |= 0x20;
            raw.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            raw.push(padding);
        }
        raw
    }

    #[test]
    fn reads_what_rtc_writes_in_both_extension_forms_with_csrcs_and_padding() {
        let long = [7u8; 40];
        for (extensions, padding, csrcs) in [
            (vec![], 0, 0),
            (vec![(1u8, &[0x8a][..]), (3, &[0, 5][..])], 0, 0),
            (vec![(1u8, &[0x8a][..]), (5, &long[..])], 4, 2),
            (vec![(14u8, &b"0"[..])], 1, 15),
        ] {
            let raw = rtc_packet(&extensions, padding, csrcs);
            let view = RtpView::parse(&raw).expect("parses");
            assert_eq!(view.payload(), b"opus-frame");
            assert_eq!(view.seq(), 0xfffe);
            assert_eq!(view.timestamp(), 0xdead_beef);
            assert_eq!(view.ssrc(), 0x0102_0304);
            assert_eq!(view.payload_type(), 111);
            assert!(view.marker());
            for (id, value) in &extensions {
                assert_eq!(view.extension(*id), Some(*value), "id {id}");
            }
            assert_eq!(view.extensions().count(), extensions.len());
            assert_eq!(view.extension(9), None);
        }
    }

    #[test]
    fn a_forwarded_copy_is_what_rtc_reads_back() {
        use rtc::shared::marshal::Unmarshal;
        let dd = [0xc1u8; 23];
        for extensions in [
            vec![],
            vec![(1u8, &[0x8a][..]), (2, &[0, 9][..]), (4, &b"12"[..])],
            vec![(3u8, &[0, 9][..]), (5, &dd[..])],
        ] {
            let mut out = Vec::with_capacity(1500);
            let header = Header {
                payload_type: 100,
                seq: 7,
                timestamp: 960,
                ssrc: 0xabcd,
                marker: true,
            };
            write_forwarded(&mut out, header, &extensions, b"payload").expect("written");
            let parsed = rtc::rtp::Packet::unmarshal(&mut &out[..]).expect("rtc reads it");
            assert_eq!(parsed.header.payload_type, 100);
            assert_eq!(parsed.header.sequence_number, 7);
            assert_eq!(parsed.header.timestamp, 960);
            assert_eq!(parsed.header.ssrc, 0xabcd);
            assert!(parsed.header.marker);
            assert_eq!(&parsed.payload[..], b"payload");
            for (id, value) in &extensions {
                assert_eq!(
                    parsed.header.get_extension(*id).as_deref(),
                    Some(*value),
                    "id {id}"
                );
            }
            let view = RtpView::parse(&out).expect("we read it too");
            assert_eq!(view.extensions().count(), extensions.len());
        }
    }

    #[test]
    fn malformed_packets_are_refused_without_panicking() {
        let good = rtc_packet(&[(1, &[0x8a]), (5, &[9; 20])], 4, 2);
        for len in 0..good.len() {
            // Truncations either fail or read fewer bytes; never panic.
            if let Ok(view) = RtpView::parse(&good[..len]) {
                let _ = view.extensions().count();
                let _ = view.payload();
            }
        }
        assert_eq!(RtpView::parse(&[0x40; 20]).err(), Some(RtpError::Version));
        let mut bad_padding = rtc_packet(&[], 4, 0);
        let last = bad_padding.len() - 1;
        bad_padding[last] = 200;
        assert_eq!(RtpView::parse(&bad_padding).err(), Some(RtpError::Padding));
        // An extension element running past its block stops the reading.
        let mut raw = rtc_packet(&[(1, &[1, 2, 3, 4])], 0, 0);
        raw[16] = 0x1f; // id 1, 16 bytes: past the block
        let view = RtpView::parse(&raw).expect("the header holds");
        assert_eq!(view.extension(1), None);
        // Every byte value at every position of the header.
        for i in 0..good.len().min(40) {
            for byte in [0u8, 0x0f, 0x10, 0xf0, 0xff] {
                let mut bad = good.clone();
                bad[i] = byte;
                if let Ok(view) = RtpView::parse(&bad) {
                    let _ = view.extensions().count();
                }
            }
        }
    }
}
