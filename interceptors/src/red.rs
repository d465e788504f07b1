//! RTP payload for redundant audio (RFC 2198, "RED"), sans-IO: the wire format, packing
//! a frame together with copies of the frames before it and unpacking such a payload
//! into its blocks. Shared by the engine (which sends and plays RED) and the SFU (which
//! forwards it, strips it for subscribers without RED, and rebuilds lost packets from
//! the copies in later ones). Neither `rtc` nor `webrtc` has RED for audio (they know
//! the codec name, not the format), hence this module.
//!
//! Format (RFC 2198 §3): one 4-byte header per redundant block (`F`=1, block payload
//! type, 14-bit timestamp offset, 10-bit length), then a 1-byte header for the primary
//! (`F`=0, payload type), then the redundant blocks' data oldest first, then the primary's.

/// The payload type Sotto's engine and SFU give RED over Opus (Chrome's choice as well).
pub const RED_PAYLOAD_TYPE: u8 = 63;

/// RED's MIME type.
pub const MIME_TYPE_RED: &str = "audio/red";

/// Largest timestamp offset a block header can carry (14 bits).
pub const MAX_TIMESTAMP_OFFSET: u32 = (1 << 14) - 1;

/// Largest redundant block (10-bit length).
pub const MAX_BLOCK_BYTES: usize = (1 << 10) - 1;

/// Most blocks one payload may hold when unpacked (RFC 2198 sets no limit; more than
/// this is no sender's redundancy but an attack on the parser).
pub const MAX_BLOCKS: usize = 16;

/// Why a RED payload does not unpack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedError {
    /// The payload ends inside a header or a block.
    #[error("RED payload truncated: {0}")]
    Truncated(&'static str),
    /// More blocks than [`MAX_BLOCKS`].
    #[error("RED payload has more than {MAX_BLOCKS} blocks")]
    TooManyBlocks,
}

/// One block of a RED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// The block's payload type (the codec's, e.g. Opus).
    pub payload_type: u8,
    /// How far before the packet's RTP timestamp this block's audio starts (0 for the
    /// primary).
    pub timestamp_offset: u32,
    /// The encoded frame.
    pub data: &'a [u8],
}

/// Unpacks a RED payload into its blocks, redundant ones first (oldest first) and the
/// primary last. Zero-length blocks are returned as they are (the caller skips them).
pub fn unpack(payload: &[u8]) -> Result<Vec<Block<'_>>, RedError> {
    let mut headers = Vec::new();
    let mut at = 0;
    loop {
        let Some(&first) = payload.get(at) else {
            return Err(RedError::Truncated("no primary header"));
        };
        let payload_type = first & 0x7f;
        if first & 0x80 == 0 {
            headers.push((payload_type, 0, None));
            at += 1;
            break;
        }
        let Some(header) = payload.get(at..at + 4) else {
            return Err(RedError::Truncated("in a block header"));
        };
        if headers.len() + 1 >= MAX_BLOCKS {
            return Err(RedError::TooManyBlocks);
        }
        let offset = (u32::from(header[1]) << 6) | (u32::from(header[2]) >> 2);
        let length = (usize::from(header[2] & 0x03) << 8) | usize::from(header[3]);
        headers.push((payload_type, offset, Some(length)));
        at += 4;
    }
    let mut blocks = Vec::with_capacity(headers.len());
    for (payload_type, timestamp_offset, length) in headers {
        let data = match length {
            Some(length) => {
                let data = payload
                    .get(at..at + length)
                    .ok_or(RedError::Truncated("in a redundant block"))?;
                at += length;
                data
            }
            // The primary takes the rest.
            None => &payload[at..],
        };
        blocks.push(Block {
            payload_type,
            timestamp_offset,
            data,
        });
    }
    Ok(blocks)
}

/// Packs `primary` with `redundant` blocks (oldest first; their payload type and offset
/// are used as given) into `out`, which is cleared first. A redundant block that does not
/// fit the header's fields (offset over [`MAX_TIMESTAMP_OFFSET`], data over
/// [`MAX_BLOCK_BYTES`], or empty) is left out: the packet is still valid, only less
/// redundant.
pub fn pack(primary_payload_type: u8, redundant: &[Block<'_>], primary: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let fits = |b: &&Block<'_>| {
        b.timestamp_offset <= MAX_TIMESTAMP_OFFSET
            && !b.data.is_empty()
            && b.data.len() <= MAX_BLOCK_BYTES
    };
    for block in redundant.iter().filter(fits) {
        let offset = block.timestamp_offset;
        let length = block.data.len();
        out.push(0x80 | (block.payload_type & 0x7f));
        out.push((offset >> 6) as u8);
        out.push((((offset & 0x3f) << 2) as u8) | ((length >> 8) as u8 & 0x03));
        out.push((length & 0xff) as u8);
    }
    out.push(primary_payload_type & 0x7f);
    for block in redundant.iter().filter(fits) {
        out.extend_from_slice(block.data);
    }
    out.extend_from_slice(primary);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(offset: u32, data: &[u8]) -> Block<'_> {
        Block {
            payload_type: 111,
            timestamp_offset: offset,
            data,
        }
    }

    #[test]
    fn pack_then_unpack_gives_the_blocks_back() {
        let mut out = Vec::new();
        let older = vec![1u8; 300];
        let newer = vec![2u8; 5];
        pack(
            111,
            &[block(1920, &older), block(960, &newer)],
            &[3, 3, 3],
            &mut out,
        );
        assert_eq!(out.len(), 4 + 4 + 1 + 300 + 5 + 3);
        let blocks = unpack(&out).expect("unpacks");
        assert_eq!(
            blocks,
            vec![
                block(1920, &older),
                block(960, &newer),
                block(0, &[3, 3, 3])
            ]
        );
    }

    #[test]
    fn the_header_fields_follow_rfc_2198() {
        // RFC 2198 §3's fields: F, block PT, 14-bit offset, 10-bit length.
        let mut out = Vec::new();
        pack(111, &[block(0x3fff, &[9; 0x3ff])], &[7], &mut out);
        assert_eq!(&out[..5], &[0x80 | 111, 0xff, 0xff, 0xff, 111]);
        let mut out = Vec::new();
        pack(111, &[block(960, &[9; 3])], &[7], &mut out);
        // 960 = 0b00_0011_1100_0000: high 8 of 14 bits = 0x0f, low 6 = 0.
        assert_eq!(&out[..5], &[0x80 | 111, 0x0f, 0x00, 0x03, 111]);
    }

    #[test]
    fn blocks_that_do_not_fit_the_header_are_left_out() {
        let mut out = Vec::new();
        let big = vec![0u8; MAX_BLOCK_BYTES + 1];
        pack(
            111,
            &[
                block(MAX_TIMESTAMP_OFFSET + 1, &[1]),
                block(960, &big),
                block(960, &[]),
            ],
            &[5],
            &mut out,
        );
        assert_eq!(out, vec![111, 5]);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        assert!(matches!(unpack(&[]), Err(RedError::Truncated(_))));
        assert!(matches!(
            unpack(&[0x80 | 111, 0]),
            Err(RedError::Truncated(_))
        ));
        // A header promising 10 bytes of block that are not there.
        assert!(matches!(
            unpack(&[0x80 | 111, 0x0f, 0x00, 10, 111, 1, 2]),
            Err(RedError::Truncated(_))
        ));
        // Headers with F set to the end.
        assert!(matches!(
            unpack(&[0x80, 0, 0, 0, 0x80, 0, 0, 0]),
            Err(RedError::Truncated(_))
        ));
        let many: Vec<u8> = std::iter::repeat_n([0x80 | 111, 0, 0, 0], 20)
            .flatten()
            .chain([111])
            .collect();
        assert_eq!(unpack(&many), Err(RedError::TooManyBlocks));
        // Every prefix and every single-byte corruption of a good payload: no panic.
        let mut good = Vec::new();
        pack(
            111,
            &[block(1920, &[1; 40]), block(960, &[2; 30])],
            &[3; 20],
            &mut good,
        );
        for end in 0..good.len() {
            let _ = unpack(&good[..end]);
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                let _ = unpack(&bad);
            }
        }
    }
}
