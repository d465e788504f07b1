//! The VP8 decoder: one frame in, at most one picture out, copied into buffers we own.

use std::os::raw::{c_int, c_uint};

use vpx_sys as ffi;

use crate::encoder::zeroed_ctx;
use crate::{VpxError, check};

/// A decoded picture: tightly packed I420 (strides equal to the plane widths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma, `width * height` bytes.
    pub y: Vec<u8>,
    /// Chroma planes, `ceil(width/2) * ceil(height/2)` bytes each.
    pub u: Vec<u8>,
    /// See `u`.
    pub v: Vec<u8>,
    /// libvpx decoded it but says a reference it used was damaged (a frame was lost
    /// before it): shown, yet a keyframe should be asked for.
    pub corrupted: bool,
}

/// A VP8 decoder. Not `Sync`: one thread decodes.
pub struct Vp8Decoder {
    /// Boxed so that its address stays fixed: libvpx keeps pointers into it.
    ctx: Box<ffi::vpx_codec_ctx_t>,
}

// SAFETY: the context is only touched through `&mut self`, and libvpx decoder contexts
// may move between threads.
unsafe impl Send for Vp8Decoder {}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Decoder").finish_non_exhaustive()
    }
}

impl Vp8Decoder {
    /// A decoder on `threads` threads.
    pub fn new(threads: u32) -> Result<Self, VpxError> {
        let mut ctx = zeroed_ctx();
        let cfg = ffi::vpx_codec_dec_cfg_t {
            threads: threads.max(1),
            w: 0,
            h: 0,
        };
        // SAFETY: `ctx` is boxed and zeroed as libvpx expects; `cfg` lives through the
        // call (libvpx copies it); the ABI version is the bindings' own.
        let status = unsafe {
            ffi::vpx_codec_dec_init_ver(
                &mut *ctx,
                crate::vp8_dx(),
                &cfg,
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        check("vpx_codec_dec_init", status, Some(&mut ctx))?;
        Ok(Vp8Decoder { ctx })
    }

    /// Decodes one VP8 frame. `Ok(None)` when it gave no picture (a frame that is not
    /// shown); an error for data libvpx refuses (corrupt, truncated, not VP8, or a stream
    /// that does not start with a keyframe). The decoder stays usable after an error:
    /// the next keyframe decodes.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<DecodedFrame>, VpxError> {
        if data.is_empty() {
            // An empty buffer means "flush" to libvpx, not a frame.
            return Err(VpxError::InvalidInput("an empty VP8 frame".into()));
        }
        let size = c_uint::try_from(data.len())
            .map_err(|_| VpxError::InvalidInput(format!("a {}-byte frame", data.len())))?;
        // SAFETY: `data` holds `size` readable bytes for the duration of the call; the
        // decoder does not keep the pointer (no input fragments mode).
        let status = unsafe {
            ffi::vpx_codec_decode(&mut *self.ctx, data.as_ptr(), size, std::ptr::null_mut(), 0)
        };
        check("vpx_codec_decode", status, Some(&mut self.ctx))?;
        let mut corrupted: c_int = 0;
        // SAFETY: VP8D_GET_FRAME_CORRUPTED writes one `int` through the pointer we pass.
        let status = unsafe {
            ffi::vpx_codec_control_(
                &mut *self.ctx,
                ffi::vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupted as *mut c_int,
            )
        };
        let corrupted = status == ffi::vpx_codec_err_t::VPX_CODEC_OK && corrupted != 0;
        let mut picture = None;
        let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: `ctx` is an initialised decoder, `iter` starts null; the image stays
            // valid until the next decode call, and we copy it out before that.
            let image = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            // SAFETY: non-null means a valid image owned by the decoder.
            let Some(image) = (unsafe { image.as_ref() }) else {
                break;
            };
            picture = Some(copy_image(image, corrupted)?);
        }
        Ok(picture)
    }
}

/// Copies a decoder image into tightly packed planes.
fn copy_image(image: &ffi::vpx_image_t, corrupted: bool) -> Result<DecodedFrame, VpxError> {
    if image.fmt != ffi::vpx_img_fmt::VPX_IMG_FMT_I420
        || image.x_chroma_shift != 1
        || image.y_chroma_shift != 1
    {
        return Err(VpxError::InvalidInput(format!(
            "the decoder gave a {:?} picture, not I420",
            image.fmt
        )));
    }
    let (width, height) = (image.d_w, image.d_h);
    let (chroma_width, chroma_height) = (width.div_ceil(2), height.div_ceil(2));
    let plane = |index: usize, w: u32, h: u32| -> Result<Vec<u8>, VpxError> {
        let stride = image.stride[index];
        let base = image.planes[index];
        if base.is_null() || stride < w as c_int {
            return Err(VpxError::InvalidInput(
                "a decoder plane without data".into(),
            ));
        }
        let mut out = Vec::with_capacity(w as usize * h as usize);
        for row in 0..h as usize {
            // SAFETY: libvpx's image holds `h` rows of at least `w` bytes each, `stride`
            // bytes apart, starting at `base`, for as long as the decoder is not called
            // again; the rows are copied now.
            let line = unsafe {
                std::slice::from_raw_parts(base.wrapping_add(row * stride as usize), w as usize)
            };
            out.extend_from_slice(line);
        }
        Ok(out)
    };
    Ok(DecodedFrame {
        width,
        height,
        y: plane(0, width, height)?,
        u: plane(1, chroma_width, chroma_height)?,
        v: plane(2, chroma_width, chroma_height)?,
        corrupted,
    })
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: `ctx` was initialised in `new` and is destroyed once, here.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}
