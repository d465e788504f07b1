//! Scaling I420 pictures (each plane on its own) for the simulcast layers and for
//! comparing a received layer with its source. `fast_image_resize` does the work (SIMD,
//! no C); the filter is bilinear, which is what real-time encoders' own scalers use for
//! 2:1 steps.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::{VideoError, VideoFrame};

/// A scaler that keeps its buffers between pictures.
pub struct Scaler {
    resizer: Resizer,
    options: ResizeOptions,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler").finish_non_exhaustive()
    }
}

impl Default for Scaler {
    fn default() -> Self {
        Scaler {
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        }
    }
}

impl Scaler {
    /// `frame` at `width`x`height` (a copy when the size is already right).
    pub fn scale(
        &mut self,
        frame: &VideoFrame,
        width: u32,
        height: u32,
    ) -> Result<VideoFrame, VideoError> {
        if !frame.is_consistent() || width == 0 || height == 0 {
            return Err(VideoError::Picture(format!(
                "scaling {frame:?} to {width}x{height}"
            )));
        }
        if (frame.width, frame.height) == (width, height) {
            return Ok(frame.clone());
        }
        let mut out = VideoFrame::black(width, height);
        let (cw, ch) = (out.chroma_width(), out.chroma_height());
        self.plane(
            &frame.y,
            frame.width,
            frame.height,
            &mut out.y,
            width,
            height,
        )?;
        let (scw, sch) = (frame.chroma_width(), frame.chroma_height());
        self.plane(&frame.u, scw, sch, &mut out.u, cw, ch)?;
        self.plane(&frame.v, scw, sch, &mut out.v, cw, ch)?;
        Ok(out)
    }

    fn plane(
        &mut self,
        src: &[u8],
        src_width: u32,
        src_height: u32,
        dst: &mut [u8],
        dst_width: u32,
        dst_height: u32,
    ) -> Result<(), VideoError> {
        let failed = |err: &dyn std::fmt::Display| VideoError::Picture(format!("scaling: {err}"));
        let src =
            ImageRef::new(src_width, src_height, src, PixelType::U8).map_err(|e| failed(&e))?;
        let mut dst = Image::from_slice_u8(dst_width, dst_height, dst, PixelType::U8)
            .map_err(|e| failed(&e))?;
        self.resizer
            .resize(&src, &mut dst, &self.options)
            .map_err(|e| failed(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::code::FrameCode;
    use crate::video::pattern::render;

    #[test]
    fn a_scaled_pattern_keeps_its_code() {
        let mut scaler = Scaler::default();
        let source = render(640, 360, 42, 1_000);
        for (w, h) in [(320, 180), (160, 90), (1280, 720)] {
            let scaled = scaler.scale(&source, w, h).unwrap();
            assert!(scaled.is_consistent());
            assert_eq!(
                FrameCode::read(&scaled.y, w, h),
                Some(FrameCode::new(42, 1_000)),
                "{w}x{h}"
            );
        }
    }

    #[test]
    fn inconsistent_pictures_are_refused() {
        let mut scaler = Scaler::default();
        let mut bad = render(64, 48, 0, 0);
        bad.u.pop();
        assert!(scaler.scale(&bad, 32, 24).is_err());
    }
}
