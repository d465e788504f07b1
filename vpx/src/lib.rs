//! VP8 through libvpx, behind a small safe interface: the workspace's one place where
//! unsafe code talks to libvpx. It owns the codec contexts and checks every buffer it
//! hands to C (plane sizes against strides and dimensions, packet lengths); nothing else
//! in Sotto sees a raw pointer. Must not know about RTP, calls or files.
//!
//! Why our own wrapper: the crates that wrap libvpx (`vpx-encode`, `libvpx`) expose
//! neither temporal layers, per-frame reference flags, the bitrate changed mid-stream
//! nor the multi-resolution (simulcast) encoder, all of which a real-time call needs.
//!
//! - [`Vp8Encoder`]: real-time CBR, no lookahead, keyframes on request, bitrate changes,
//!   1 to 3 temporal layers with the reference pattern browsers use.
//! - [`SimulcastEncoder`]: several resolutions of one source in one libvpx
//!   multi-resolution encoder, each with its own keyframe requests.
//! - [`Vp8Decoder`]: frames in, I420 pictures out, corrupt input reported as an error.

mod decoder;
mod encoder;
mod simulcast;

pub use decoder::{DecodedFrame, Vp8Decoder};
pub use encoder::{EncodedFrame, EncoderConfig, Vp8Encoder};
pub use simulcast::{SimulcastEncoder, SimulcastLayer};

use std::ffi::CStr;

use vpx_sys as ffi;

/// What can go wrong in libvpx or before reaching it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VpxError {
    /// libvpx refused a call; `detail` is its own description.
    #[error("libvpx {call}: {detail}")]
    Codec {
        /// The libvpx function.
        call: &'static str,
        /// libvpx's error string (and detail, when it gives one).
        detail: String,
    },
    /// A picture whose planes do not match its size, or a configuration out of range.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// An I420 picture borrowed from its owner: a full-resolution luma plane and two
/// half-resolution (rounded up) chroma planes, each with its row stride.
#[derive(Debug, Clone, Copy)]
pub struct I420<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma, `y_stride * height` bytes at least.
    pub y: &'a [u8],
    /// Blue-difference chroma, `uv_stride * chroma_height` bytes at least.
    pub u: &'a [u8],
    /// Red-difference chroma.
    pub v: &'a [u8],
    /// Bytes from one luma row to the next.
    pub y_stride: usize,
    /// Bytes from one chroma row to the next.
    pub uv_stride: usize,
}

impl I420<'_> {
    /// Chroma planes' width: half the luma's, rounded up.
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Chroma planes' height: half the luma's, rounded up.
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// Checks that every plane holds what its size and stride say, so that libvpx never
    /// reads past a slice.
    pub fn check(&self) -> Result<(), VpxError> {
        if self.width == 0 || self.height == 0 || self.width > 16_384 || self.height > 16_384 {
            return Err(VpxError::InvalidInput(format!(
                "a {}x{} picture",
                self.width, self.height
            )));
        }
        let need = |stride: usize, width: u32, rows: u32| {
            if stride < width as usize {
                None
            } else {
                Some(stride * (rows as usize - 1) + width as usize)
            }
        };
        let luma = need(self.y_stride, self.width, self.height);
        let chroma = need(self.uv_stride, self.chroma_width(), self.chroma_height());
        match (luma, chroma) {
            (Some(luma), Some(chroma))
                if self.y.len() >= luma && self.u.len() >= chroma && self.v.len() >= chroma =>
            {
                Ok(())
            }
            _ => Err(VpxError::InvalidInput(format!(
                "planes of {}, {} and {} bytes (strides {} and {}) for a {}x{} picture",
                self.y.len(),
                self.u.len(),
                self.v.len(),
                self.y_stride,
                self.uv_stride,
                self.width,
                self.height
            ))),
        }
    }

    /// A libvpx image header over these planes (libvpx only reads them when encoding).
    /// Call [`I420::check`] first.
    fn to_vpx_image(self) -> ffi::vpx_image_t {
        let mut image = ffi::vpx_image_t {
            fmt: ffi::vpx_img_fmt::VPX_IMG_FMT_I420,
            cs: ffi::vpx_color_space::VPX_CS_UNKNOWN,
            range: ffi::vpx_color_range::VPX_CR_STUDIO_RANGE,
            w: self.width,
            h: self.height,
            bit_depth: 8,
            d_w: self.width,
            d_h: self.height,
            r_w: self.width,
            r_h: self.height,
            x_chroma_shift: 1,
            y_chroma_shift: 1,
            planes: [std::ptr::null_mut(); 4],
            stride: [0; 4],
            bps: 12,
            user_priv: std::ptr::null_mut(),
            img_data: std::ptr::null_mut(),
            img_data_owner: 0,
            self_allocd: 0,
            fb_priv: std::ptr::null_mut(),
        };
        // The encoder takes `const vpx_image_t*` and never writes through the planes; the
        // pointers are `*mut` only because the struct is shared with the decoder.
        image.planes[0] = self.y.as_ptr().cast_mut();
        image.planes[1] = self.u.as_ptr().cast_mut();
        image.planes[2] = self.v.as_ptr().cast_mut();
        image.stride[0] = self.y_stride as i32;
        image.stride[1] = self.uv_stride as i32;
        image.stride[2] = self.uv_stride as i32;
        image
    }
}

/// libvpx's version string, e.g. "v1.12.0".
pub fn version() -> String {
    // SAFETY: vpx_codec_version_str returns a pointer to a static NUL-terminated string.
    let raw = unsafe { ffi::vpx_codec_version_str() };
    c_string(raw).unwrap_or_default()
}

/// libvpx's VP8 encoder interface.
fn vp8_cx() -> *mut ffi::vpx_codec_iface_t {
    // SAFETY: returns a pointer to libvpx's static interface table; no arguments.
    unsafe { ffi::vpx_codec_vp8_cx() }
}

/// libvpx's VP8 decoder interface.
fn vp8_dx() -> *mut ffi::vpx_codec_iface_t {
    // SAFETY: returns a pointer to libvpx's static interface table; no arguments.
    unsafe { ffi::vpx_codec_vp8_dx() }
}

/// Copies a C string libvpx returned (static or owned by a live context).
fn c_string(raw: *const std::os::raw::c_char) -> Option<String> {
    if raw.is_null() {
        return None;
    }
    // SAFETY: libvpx's error and version strings are NUL-terminated and stay valid at
    // least until the next call on the same context; we copy them out at once.
    let text = unsafe { CStr::from_ptr(raw) };
    Some(text.to_string_lossy().into_owned())
}

/// Turns a libvpx status into a `Result`, with the context's error detail when there is
/// one.
fn check(
    call: &'static str,
    status: ffi::vpx_codec_err_t,
    ctx: Option<&mut ffi::vpx_codec_ctx_t>,
) -> Result<(), VpxError> {
    if status == ffi::vpx_codec_err_t::VPX_CODEC_OK {
        return Ok(());
    }
    // SAFETY: vpx_codec_err_to_string returns a static string for any status value.
    let mut detail = c_string(unsafe { ffi::vpx_codec_err_to_string(status) })
        .unwrap_or_else(|| format!("{status:?}"));
    if let Some(ctx) = ctx {
        // SAFETY: `ctx` is an initialised context we own; the detail string belongs to it
        // and is copied out before any other call.
        let extra = c_string(unsafe { ffi::vpx_codec_error_detail(ctx) });
        if let Some(extra) = extra.filter(|e| !e.is_empty()) {
            detail = format!("{detail} ({extra})");
        }
    }
    Err(VpxError::Codec { call, detail })
}
