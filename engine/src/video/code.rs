//! The frame code: a frame number and a capture instant drawn into the luma of a test
//! picture as black and white cells, so that a receiver can tell which source frame a
//! decoded picture is and how long it took to arrive. It must survive what a call does to
//! a picture: VP8 at low bitrates and scaling down to a 160x90 simulcast layer.
//!
//! Layout: a band across the top of the picture, [`ROWS`] rows of [`COLUMNS`] cells, each
//! cell 1/16 of the width and 1/24 of the height (10x3.75 px at 160x90, 40x15 at 640x360),
//! with a gray guard column on each side. 64 bits, most significant first: the frame
//! number (24 bits), the capture instant in ms on the wall clock modulo 2^24 (about 4.7
//! hours), and a CRC-16 over both, so that a damaged code is refused rather than misread.

use crc::{CRC_16_IBM_3740, Crc};

/// Cells per row.
pub const COLUMNS: u32 = 16;
/// Rows of cells.
pub const ROWS: u32 = 4;
/// A cell's height is the picture's divided by this.
const CELL_HEIGHT_DIVISOR: u32 = 24;
/// Luma of a 0 cell and of a 1 cell (video range).
const BLACK: u8 = 16;
const WHITE: u8 = 235;
/// Frame numbers and instants wrap at 24 bits.
const MASK_24: u32 = 0x00ff_ffff;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// What one picture's code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCode {
    /// The frame number modulo 2^24.
    pub frame: u32,
    /// The capture instant, ms on the wall clock modulo 2^24.
    pub capture_ms: u32,
}

impl FrameCode {
    /// The code of frame `frame` captured at `wall_ms` (both taken modulo 2^24).
    pub fn new(frame: u64, wall_ms: u64) -> FrameCode {
        FrameCode {
            frame: (frame as u32) & MASK_24,
            capture_ms: (wall_ms as u32) & MASK_24,
        }
    }

    fn bits(&self) -> u64 {
        let payload = (u64::from(self.frame) << 24) | u64::from(self.capture_ms);
        let crc = CRC16.checksum(&payload.to_be_bytes()[2..]);
        (payload << 16) | u64::from(crc)
    }

    /// The code that 64 bits read from a picture carry, if their CRC holds (for codes
    /// read elsewhere: the bench reads them in the browser).
    pub fn from_bits(bits: u64) -> Option<FrameCode> {
        let payload = bits >> 16;
        if CRC16.checksum(&payload.to_be_bytes()[2..]) != bits as u16 {
            return None;
        }
        Some(FrameCode {
            frame: (payload >> 24) as u32 & MASK_24,
            capture_ms: payload as u32 & MASK_24,
        })
    }

    /// Milliseconds from the capture instant to `now_wall_ms` (modulo 2^24, so correct
    /// for delays under about 4.7 hours).
    pub fn age_ms(&self, now_wall_ms: u64) -> u32 {
        ((now_wall_ms as u32) & MASK_24).wrapping_sub(self.capture_ms) & MASK_24
    }

    /// Draws the code into the top band of a `width`x`height` luma plane.
    pub fn draw(&self, luma: &mut [u8], width: u32, height: u32) {
        let bits = self.bits();
        for row in 0..ROWS {
            for column in 0..COLUMNS {
                let bit = 63 - (row * COLUMNS + column);
                let value = if bits >> bit & 1 == 1 { WHITE } else { BLACK };
                let (x0, x1, y0, y1) = cell(width, height, column, row);
                for y in y0..y1 {
                    let start = (y * width + x0) as usize;
                    let end = (y * width + x1) as usize;
                    if let Some(line) = luma.get_mut(start..end) {
                        line.fill(value);
                    }
                }
            }
        }
    }

    /// Reads the code from a luma plane; `None` when there is none or it is damaged.
    pub fn read(luma: &[u8], width: u32, height: u32) -> Option<FrameCode> {
        if width < COLUMNS * 2
            || height < CELL_HEIGHT_DIVISOR
            || luma.len() < (width * height) as usize
        {
            return None;
        }
        let mut bits = 0u64;
        for row in 0..ROWS {
            for column in 0..COLUMNS {
                let (x0, x1, y0, y1) = cell(width, height, column, row);
                // The middle of the cell: its edges blur into the neighbours.
                let (mx0, mx1) = middle(x0, x1);
                let (my0, my1) = middle(y0, y1);
                let mut sum = 0u32;
                let mut count = 0u32;
                for y in my0..my1 {
                    for x in mx0..mx1 {
                        sum += u32::from(luma[(y * width + x) as usize]);
                        count += 1;
                    }
                }
                let mean = sum / count.max(1);
                bits = (bits << 1) | u64::from(mean > u32::from(BLACK + WHITE) / 2);
            }
        }
        FrameCode::from_bits(bits)
    }
}

/// The pixel bounds of a cell: x from `x0` to `x1`, y from `y0` to `y1`, exclusive.
fn cell(width: u32, height: u32, column: u32, row: u32) -> (u32, u32, u32, u32) {
    let x0 = column * width / COLUMNS;
    let x1 = (column + 1) * width / COLUMNS;
    let y0 = row * height / CELL_HEIGHT_DIVISOR;
    let y1 = (row + 1) * height / CELL_HEIGHT_DIVISOR;
    (x0, x1, y0, y1.max(y0 + 1))
}

/// The middle half of a span (at least one pixel).
fn middle(a: u32, b: u32) -> (u32, u32) {
    let quarter = (b - a) / 4;
    let (lo, hi) = (a + quarter, b - quarter);
    if hi > lo { (lo, hi) } else { (a, a + 1) }
}

/// The rows the code covers in a picture of `height` rows.
pub fn band_height(height: u32) -> u32 {
    ROWS * height / CELL_HEIGHT_DIVISOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_reads_back_at_every_layer_size() {
        for (width, height) in [(160, 90), (320, 180), (640, 360), (1280, 720), (161, 91)] {
            let mut luma = vec![128u8; (width * height) as usize];
            let code = FrameCode::new(123_456, 1_733_400_000_123);
            code.draw(&mut luma, width, height);
            assert_eq!(
                FrameCode::read(&luma, width, height),
                Some(code),
                "{width}x{height}"
            );
        }
    }

    #[test]
    fn damage_is_refused_not_misread() {
        let (width, height) = (320, 180);
        let mut luma = vec![128u8; (width * height) as usize];
        FrameCode::new(7, 99).draw(&mut luma, width, height);
        // Flip one cell.
        let (x0, x1, y0, y1) = cell(width, height, 5, 1);
        for y in y0..y1 {
            for x in x0..x1 {
                let p = &mut luma[(y * width + x) as usize];
                *p = if *p > 128 { BLACK } else { WHITE };
            }
        }
        assert_eq!(FrameCode::read(&luma, width, height), None);
        assert_eq!(
            FrameCode::read(&vec![16; (width * height) as usize], width, height),
            None
        );
        assert_eq!(FrameCode::read(&[1, 2, 3], width, height), None);
    }

    #[test]
    fn ages_wrap_with_the_instant() {
        let code = FrameCode::new(1, (1 << 24) - 10);
        assert_eq!(code.age_ms((1 << 24) + 30), 40);
        assert_eq!(FrameCode::new(1 << 24 | 5, 0).frame, 5);
    }
}
