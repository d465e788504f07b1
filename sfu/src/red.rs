//! The one thing the SFU reads inside an audio payload: where the primary block of a RED
//! packet (RFC 2198) starts, so that a subscriber that did not negotiate RED still gets
//! plain Opus. The block headers are in the clear even when the blocks are SFrame
//! ciphertext (the engine seals each block on its own), so stripping works on end-to-end
//! encrypted audio too. The engine's `audio::red` packs and unpacks; the SFU depends on
//! no engine code, and needs only this walk over the headers.

use std::ops::Range;

/// Headers a RED payload may have before the SFU stops reading (redundant blocks, then
/// the primary's): no sender repeats more than a handful of frames.
pub const MAX_HEADERS: usize = 16;

/// The primary block of a RED payload: its payload type and where its data lies in
/// `payload`. `None` when the payload is malformed (truncated, too many blocks, blocks
/// longer than the payload).
pub fn primary(payload: &[u8]) -> Option<(u8, Range<usize>)> {
    let mut at = 0;
    let mut redundant_bytes = 0usize;
    for _ in 0..MAX_HEADERS {
        let first = *payload.get(at)?;
        if first & 0x80 == 0 {
            // The primary's one-byte header; its data follows every redundant block's.
            let start = at + 1 + redundant_bytes;
            return (start <= payload.len()).then_some((first & 0x7f, start..payload.len()));
        }
        let header = payload.get(at..at + 4)?;
        redundant_bytes += (usize::from(header[2] & 0x03) << 8) | usize::from(header[3]);
        at += 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_alone_is_everything_after_its_header() {
        let payload = [111, 1, 2, 3];
        assert_eq!(primary(&payload), Some((111, 1..4)));
    }

    #[test]
    fn redundant_blocks_are_skipped() {
        // Two redundant blocks of 2 and 3 bytes (offsets 1920 and 960), then the primary.
        let mut payload = vec![
            0x80 | 111,
            (1920u32 >> 6) as u8,
            ((1920u32 & 0x3f) << 2) as u8,
            2,
            0x80 | 111,
            (960u32 >> 6) as u8,
            ((960u32 & 0x3f) << 2) as u8,
            3,
            111,
        ];
        payload.extend_from_slice(&[0xa, 0xa, 0xb, 0xb, 0xb, 0xc, 0xc, 0xc, 0xc]);
        let (payload_type, range) = primary(&payload).expect("a primary");
        assert_eq!(payload_type, 111);
        assert_eq!(&payload[range], &[0xc, 0xc, 0xc, 0xc]);
    }

    #[test]
    fn malformed_payloads_have_no_primary() {
        assert_eq!(primary(&[]), None);
        // A redundant header cut short.
        assert_eq!(primary(&[0x80 | 111, 0, 0]), None);
        // Redundant blocks longer than the payload.
        assert_eq!(primary(&[0x80 | 111, 0, 0, 200, 111, 1, 2]), None);
        // Only redundant headers.
        assert_eq!(primary(&[0x80 | 111; 4 * (MAX_HEADERS + 1)]), None);
    }

    #[test]
    fn an_empty_primary_is_an_empty_range() {
        assert_eq!(primary(&[0x80 | 111, 0, 4, 1, 111, 9]), Some((111, 6..6)));
    }
}
