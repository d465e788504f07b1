//! The synthetic test pattern: a moving scene with the frame code ([`super::code`]) in a
//! band at the top. A picture depends only on its size, frame number and capture instant,
//! so a receiver can render the source picture again and compare what it decoded with
//! it (PSNR, SSIM) without having the sender's file.
//!
//! The scene gives an encoder real work without being noise: a diagonal gradient that
//! slides, vertical bars that sweep across, and a textured box that bounces, each moving
//! at its own speed, over chroma that drifts slowly.

use super::code::{FrameCode, band_height};
use super::{FrameTime, VideoError, VideoFrame, VideoSource};

/// The pattern as a source: one picture per call, numbered by the caller's frame index.
#[derive(Debug, Clone)]
pub struct TestPattern {
    width: u32,
    height: u32,
    fps: u32,
}

impl TestPattern {
    /// A pattern of `width`x`height` at `fps`.
    pub fn new(width: u32, height: u32, fps: u32) -> TestPattern {
        TestPattern {
            width: width.max(32),
            height: height.max(24),
            fps: fps.max(1),
        }
    }
}

impl VideoSource for TestPattern {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn fps(&self) -> u32 {
        self.fps
    }

    fn read(&mut self, at: FrameTime) -> Result<Option<VideoFrame>, VideoError> {
        Ok(Some(render(self.width, self.height, at.index, at.wall_ms)))
    }

    fn is_realtime(&self) -> bool {
        false
    }
}

/// The pattern's picture number `index` at `width`x`height`, its code saying it was
/// captured at `wall_ms`.
pub fn render(width: u32, height: u32, index: u64, wall_ms: u64) -> VideoFrame {
    let mut frame = VideoFrame::black(width, height);
    let (w, h) = (width as i64, height as i64);
    let t = index as i64;
    let band = i64::from(band_height(height));
    // Positions scale with the picture, so every size shows the same scene.
    let box_size = (w / 6).max(4);
    let box_x = bounce(t * w / 90, w - box_size);
    let box_y = band + bounce(t * h / 70, h - band - box_size);
    let bar_period = (w / 5).max(8);
    let bar_shift = t * w / 120;
    // What depends on x + y, on x alone, and on the box's rows, computed once (this
    // runs for every sent picture, and again for every scored one).
    let gradient: Vec<i64> = (0..w + h)
        .map(|sum| (sum * 160 / (w + h) + t) % 160)
        .collect();
    let bars: Vec<i64> = (0..w)
        .map(|x| ((x + bar_shift).rem_euclid(bar_period) < bar_period / 6) as i64 * 50)
        .collect();
    let cell = (box_size / 4).max(1);
    let box_columns = box_x.max(0)..(box_x + box_size).min(w);
    for (y, row) in frame.y.chunks_exact_mut(w as usize).enumerate() {
        let y = y as i64;
        for (x, px) in row.iter_mut().enumerate() {
            let value = 40 + gradient[x + y as usize] + bars[x];
            *px = value.clamp(16, 235) as u8;
        }
        if (box_y..box_y + box_size).contains(&y) {
            for x in box_columns.clone() {
                let checker = ((x - box_x) / cell + (y - box_y) / cell) % 2;
                row[x as usize] = if checker == 0 { 220 } else { 60 };
            }
        }
    }
    let (cw, ch) = (
        i64::from(frame.chroma_width()),
        i64::from(frame.chroma_height()),
    );
    let u_row: Vec<u8> = (0..cw)
        .map(|x| (128 + ((x * 60 / cw.max(1) + t / 2) % 60) - 30) as u8)
        .collect();
    for (y, (u, v)) in frame
        .u
        .chunks_exact_mut(cw as usize)
        .zip(frame.v.chunks_exact_mut(cw as usize))
        .enumerate()
    {
        u.copy_from_slice(&u_row);
        v.fill((128 + ((y as i64 * 60 / ch.max(1) + t / 3) % 60) - 30) as u8);
    }
    FrameCode::new(index, wall_ms).draw(&mut frame.y, width, height);
    frame
}

/// A position that runs from 0 to `span` and back.
fn bounce(travelled: i64, span: i64) -> i64 {
    if span <= 0 {
        return 0;
    }
    let phase = travelled.rem_euclid(2 * span);
    if phase <= span {
        phase
    } else {
        2 * span - phase
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_carry_their_code_and_move() {
        let a = render(320, 180, 10, 5_000);
        let b = render(320, 180, 11, 5_033);
        assert!(a.is_consistent());
        assert_eq!(
            FrameCode::read(&a.y, 320, 180),
            Some(FrameCode::new(10, 5_000))
        );
        let differing = a.y.iter().zip(&b.y).filter(|(p, q)| p != q).count();
        assert!(differing > 320 * 180 / 10, "the scene moves: {differing}");
        // The same number and instant give the same picture.
        assert_eq!(render(320, 180, 10, 5_000), a);
    }

    /// The pattern, one pixel at a time, as first written: `render` must draw exactly
    /// this (receivers render pictures again to score what they decoded).
    fn plain(width: u32, height: u32, index: u64, wall_ms: u64) -> VideoFrame {
        let mut frame = VideoFrame::black(width, height);
        let (w, h) = (width as i64, height as i64);
        let t = index as i64;
        let band = i64::from(band_height(height));
        let box_size = (w / 6).max(4);
        let box_x = bounce(t * w / 90, w - box_size);
        let box_y = band + bounce(t * h / 70, h - band - box_size);
        let bar_period = (w / 5).max(8);
        let bar_shift = t * w / 120;
        for y in 0..h {
            for x in 0..w {
                let gradient = ((x + y) * 160 / (w + h) + t) % 160;
                let bar = ((x + bar_shift).rem_euclid(bar_period) < bar_period / 6) as i64 * 50;
                let mut value = 40 + gradient + bar;
                if (box_x..box_x + box_size).contains(&x) && (box_y..box_y + box_size).contains(&y)
                {
                    let cell = (box_size / 4).max(1);
                    value = if ((x - box_x) / cell + (y - box_y) / cell) % 2 == 0 {
                        220
                    } else {
                        60
                    };
                }
                frame.y[(y * w + x) as usize] = value.clamp(16, 235) as u8;
            }
        }
        let (cw, ch) = (
            i64::from(frame.chroma_width()),
            i64::from(frame.chroma_height()),
        );
        for y in 0..ch {
            for x in 0..cw {
                let i = (y * cw + x) as usize;
                frame.u[i] = (128 + ((x * 60 / cw.max(1) + t / 2) % 60) - 30) as u8;
                frame.v[i] = (128 + ((y * 60 / ch.max(1) + t / 3) % 60) - 30) as u8;
            }
        }
        FrameCode::new(index, wall_ms).draw(&mut frame.y, width, height);
        frame
    }

    #[test]
    fn the_fast_render_draws_the_plain_one() {
        for (w, h, index) in [(640, 360, 0), (640, 360, 77), (161, 91, 500), (32, 24, 9)] {
            assert!(
                render(w, h, index, 1234) == plain(w, h, index, 1234),
                "{w}x{h} #{index}"
            );
        }
    }

    #[test]
    fn odd_and_small_sizes_render() {
        for (w, h) in [(161, 91), (32, 24), (1280, 720)] {
            let frame = render(w, h, 3, 0);
            assert!(frame.is_consistent(), "{w}x{h}");
        }
    }
}
