//! H.264 over RTP (RFC 6184, packetization mode 1) and H.264 under SFrame.
//!
//! Our own payloader and depacketizer rather than webrtc-rs's: its payloader splits on
//! start codes, which SFrame ciphertext may contain, and its depacketizer works packet by
//! packet with no notion of where an access unit starts after a loss, which the frame
//! assembler needs. Sending: a NAL unit that fits goes alone, a bigger one in FU-A
//! fragments (no STAP-A: SPS and PPS go as packets of their own, as some browsers send
//! them). Receiving: each packet becomes Annex B bytes on its own (so the assembler can
//! join a frame's packets in order), and says whether it can begin an access unit.
//!
//! Under SFrame each NAL unit is sealed on its own, its one-byte header in the clear and
//! authenticated (a forwarder still tells an IDR and parameter sets from the rest), and the
//! sealed bytes get H.264's emulation prevention, so that a start code never appears in
//! ciphertext and the access unit stays valid Annex B for every step in between.

use sotto_h264::{nal_type, nal_units};

use crate::e2ee::media::MediaCrypto;
use crate::e2ee::sframe_keys::MediaKeyError;

/// The start code written before each NAL unit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// FU-A's NAL unit type.
const FU_A: u8 = 28;
/// STAP-A's.
const STAP_A: u8 = 24;

/// Splits an access unit (Annex B) into packet payloads of at most `max_payload` bytes, in
/// order; the last one gets the RTP marker bit.
pub fn packetize(frame: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    let max_payload = max_payload.max(3);
    let mut packets = Vec::new();
    for unit in nal_units(frame) {
        if unit.len() <= max_payload {
            packets.push(unit.to_vec());
            continue;
        }
        let header = unit[0];
        let indicator = (header & 0xe0) | FU_A;
        let body = &unit[1..];
        let room = max_payload - 2;
        let count = body.len().div_ceil(room);
        for (i, chunk) in body.chunks(room).enumerate() {
            let mut fu_header = header & 0x1f;
            if i == 0 {
                fu_header |= 0x80;
            }
            if i + 1 == count {
                fu_header |= 0x40;
            }
            let mut packet = Vec::with_capacity(chunk.len() + 2);
            packet.push(indicator);
            packet.push(fu_header);
            packet.extend_from_slice(chunk);
            packets.push(packet);
        }
    }
    packets
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264RtpError {
    /// Empty, or shorter than its structure says.
    #[error("an H.264 payload of {0} bytes is truncated")]
    Truncated(usize),
    /// A packetization mode 1 does not use (STAP-B, MTAP, FU-B) or a reserved type.
    #[error("H.264 NAL unit type {0} is not used in packetization mode 1")]
    Unsupported(u8),
}

/// Whether a NAL unit (its header and first body byte) can begin an access unit: a
/// parameter set, an access unit delimiter, SEI, or the first slice of a picture
/// (`first_mb_in_slice` = 0, coded as a single 1 bit).
fn begins_access_unit(kind: u8, first_body_byte: Option<u8>) -> bool {
    match kind {
        6..=9 => true,
        1 | 5 => first_body_byte.is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// One packet's payload as Annex B bytes, and whether it can begin an access unit.
pub fn depacketize(payload: &[u8]) -> Result<(bool, Vec<u8>), H264RtpError> {
    let truncated = || H264RtpError::Truncated(payload.len());
    let header = *payload.first().ok_or_else(truncated)?;
    let kind = header & 0x1f;
    match kind {
        1..=23 => {
            let mut out = Vec::with_capacity(payload.len() + 4);
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(payload);
            Ok((begins_access_unit(kind, payload.get(1).copied()), out))
        }
        STAP_A => {
            let mut out = Vec::with_capacity(payload.len() + 8);
            let mut at = 1;
            let mut begins = false;
            while at < payload.len() {
                let len_bytes = payload.get(at..at + 2).ok_or_else(truncated)?;
                let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
                let unit = payload.get(at + 2..at + 2 + len).ok_or_else(truncated)?;
                let unit_header = *unit.first().ok_or_else(truncated)?;
                if at == 1 {
                    begins = begins_access_unit(unit_header & 0x1f, unit.get(1).copied());
                }
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(unit);
                at += 2 + len;
            }
            if out.is_empty() {
                return Err(truncated());
            }
            Ok((begins, out))
        }
        FU_A => {
            let fu_header = *payload.get(1).ok_or_else(truncated)?;
            let body = payload.get(2..).ok_or_else(truncated)?;
            if fu_header & 0x80 != 0 {
                let inner = fu_header & 0x1f;
                let mut out = Vec::with_capacity(body.len() + 5);
                out.extend_from_slice(&START_CODE);
                out.push((header & 0xe0) | inner);
                out.extend_from_slice(body);
                Ok((begins_access_unit(inner, body.first().copied()), out))
            } else {
                Ok((false, body.to_vec()))
            }
        }
        other => Err(H264RtpError::Unsupported(other)),
    }
}

/// Inserts H.264's emulation prevention byte (3) after every two zero bytes followed by
/// a byte of 3 or less, so that `data` holds no start code.
fn escape(data: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &byte in data {
        if zeros >= 2 && byte <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
    if zeros >= 2 {
        // A NAL unit may not end in a zero byte; 3 ends this one, and is taken off again.
        out.push(3);
    }
}

/// Undoes [`escape`].
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &byte in data {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        out.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Seals an access unit NAL unit by NAL unit (header clear, the rest SFrame, escaped) into
/// `out` (Annex B).
pub fn seal(crypto: &MediaCrypto, frame: &[u8], out: &mut Vec<u8>) -> Result<(), MediaKeyError> {
    out.clear();
    let mut sealed = Vec::new();
    for unit in nal_units(frame) {
        sealed.clear();
        crypto.seal_video(unit, 1, &mut sealed)?;
        let Some((&header, rest)) = sealed.split_first() else {
            continue;
        };
        out.extend_from_slice(&START_CODE);
        out.push(header);
        escape(rest, out);
    }
    Ok(())
}

/// Opens an access unit sealed by [`seal`] into `out` (Annex B). One NAL unit that does not
/// open refuses the whole frame.
pub fn open(
    crypto: &MediaCrypto,
    frame: &[u8],
    now: std::time::Instant,
    out: &mut Vec<u8>,
) -> Result<(), MediaKeyError> {
    out.clear();
    let mut opened = Vec::new();
    let mut sealed = Vec::new();
    let units = nal_units(frame);
    if units.is_empty() {
        return Err(MediaKeyError::Malformed("no NAL unit"));
    }
    for unit in units {
        sealed.clear();
        sealed.push(unit[0]);
        sealed.extend_from_slice(&unescape(&unit[1..]));
        opened.clear();
        crypto.open_video(&sealed, 1, now, &mut opened)?;
        if nal_type(&opened) != nal_type(unit) {
            return Err(MediaKeyError::Malformed("a NAL header changed"));
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&opened);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn frame() -> Vec<u8> {
        let mut frame = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x38,
        ];
        frame.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88]);
        frame.extend((0..3000u32).map(|i| (i * 7 % 251) as u8 | 1));
        frame
    }

    #[test]
    fn an_access_unit_round_trips_through_packets() {
        let frame = frame();
        let packets = packetize(&frame, 1100);
        // SPS, PPS, then the IDR slice in three FU-A fragments.
        assert_eq!(packets.len(), 5);
        assert_eq!(packets[2][0] & 0x1f, FU_A);
        assert!(packets.iter().all(|p| p.len() <= 1100));
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for packet in &packets {
            let (begins, bytes) = depacketize(packet).unwrap();
            starts.push(begins);
            out.extend_from_slice(&bytes);
        }
        assert_eq!(out, frame);
        // The SPS begins the access unit, the first slice could too; fragments do not.
        assert_eq!(starts, vec![true, true, true, false, false]);
        assert!(sotto_h264::is_keyframe(&out));
    }

    #[test]
    fn stap_a_and_bad_payloads() {
        let stap = [STAP_A, 0, 2, 0x67, 1, 0, 2, 0x68, 2];
        let (begins, bytes) = depacketize(&stap).unwrap();
        assert!(begins);
        assert_eq!(bytes, vec![0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2]);
        assert!(depacketize(&[]).is_err());
        assert!(depacketize(&[STAP_A, 0, 9, 0x67]).is_err());
        assert!(depacketize(&[FU_A]).is_err());
        assert_eq!(depacketize(&[29, 0, 0]), Err(H264RtpError::Unsupported(29)));
        // A slice that is not a picture's first does not begin an access unit.
        assert!(!depacketize(&[0x41, 0x40, 1]).unwrap().0);
    }

    #[test]
    fn escaping_removes_start_codes_and_comes_back() {
        for data in [
            vec![0u8, 0, 1, 0, 0, 0, 0, 3, 7],
            vec![0, 0],
            vec![5, 0, 0, 2, 0, 0],
            (0..2000u32)
                .map(|i| (i % 3) as u8 * (i % 2) as u8)
                .collect(),
        ] {
            let mut escaped = Vec::new();
            escape(&data, &mut escaped);
            assert!(
                !escaped.windows(3).any(|w| w == [0, 0, 1] || w == [0, 0, 0]),
                "{escaped:?}"
            );
            assert_ne!(escaped.last(), Some(&0));
            assert_eq!(unescape(&escaped), data);
        }
    }
}
