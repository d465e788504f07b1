//! H.264 through OpenH264, behind a small interface: Sotto's second video codec, for
//! peers that offer no VP8. The `openh264` crate wraps the C++ library safely for
//! encoding, decoding and keyframe requests; changing a running encoder's bitrate goes
//! through its raw API, and that one call is why this crate may use unsafe code (the
//! workspace forbids it elsewhere). Must not know about RTP, calls or files.
//!
//! - [`H264Encoder`]: real-time, rate-controlled to a bitrate that can change between
//!   frames, frames skipped when over budget, keyframes (IDR, with SPS and PPS) on
//!   request; Constrained Baseline (what `profile-level-id=42e01f` promises).
//! - [`H264Decoder`]: Annex B access units in, I420 pictures out, errors reported.
//! - [`nal_units`], [`is_keyframe`]: what a frame holds.

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig as RawConfig, FrameRate, FrameType, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSource;

/// What can go wrong in OpenH264 or before reaching it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    /// OpenH264 refused (its message).
    #[error("openh264: {0}")]
    Codec(String),
    /// A picture or setting that cannot be right.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

fn codec(err: openh264::Error) -> H264Error {
    H264Error::Codec(err.to_string())
}

/// An I420 picture borrowed from its owner, each plane with its row stride.
#[derive(Debug, Clone, Copy)]
pub struct Yuv<'a> {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Luma, `y_stride * height` bytes at least.
    pub y: &'a [u8],
    /// Blue-difference chroma, `uv_stride * height / 2` bytes at least.
    pub u: &'a [u8],
    /// Red-difference chroma.
    pub v: &'a [u8],
    /// Bytes from one luma row to the next.
    pub y_stride: usize,
    /// Bytes from one chroma row to the next.
    pub uv_stride: usize,
}

impl Yuv<'_> {
    /// Checks that every plane holds what its size and stride say, so that OpenH264
    /// never reads past a slice (it takes bare pointers and strides).
    pub fn check(&self) -> Result<(), H264Error> {
        let (w, h) = (self.width as usize, self.height as usize);
        if w < 16 || h < 16 || w > 3840 || h > 2160 || w % 2 != 0 || h % 2 != 0 {
            return Err(H264Error::InvalidInput(format!("a {w}x{h} picture")));
        }
        let fits = |plane: &[u8], stride: usize, row: usize, rows: usize| {
            stride >= row && plane.len() >= stride * (rows - 1) + row
        };
        if !fits(self.y, self.y_stride, w, h)
            || !fits(self.u, self.uv_stride, w / 2, h / 2)
            || !fits(self.v, self.uv_stride, w / 2, h / 2)
        {
            return Err(H264Error::InvalidInput(format!(
                "planes too small for {w}x{h} at strides {}/{}",
                self.y_stride, self.uv_stride
            )));
        }
        Ok(())
    }
}

impl YUVSource for Yuv<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.width as usize, self.height as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.y_stride, self.uv_stride, self.uv_stride)
    }

    fn y(&self) -> &[u8] {
        self.y
    }

    fn u(&self) -> &[u8] {
        self.u
    }

    fn v(&self) -> &[u8] {
        self.v
    }
}

/// An encoder's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second the source gives.
    pub fps: u32,
    /// The bitrate to start at, bit/s.
    pub bitrate_bps: u32,
}

/// One encoded access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Annex B: NAL units, each after a start code.
    pub data: Vec<u8>,
    /// An IDR frame (SPS and PPS before it): decodable on its own.
    pub keyframe: bool,
}

/// A real-time H.264 encoder. Not `Sync`: one thread encodes.
pub struct H264Encoder {
    encoder: Encoder,
    config: EncoderConfig,
    bitrate_bps: u32,
    /// The encoder starts with an IDR on its own; later ones are asked for.
    started: bool,
}

/// The lowest bitrate OpenH264 is asked for (it misbehaves near zero).
const MIN_BITRATE_BPS: u32 = 10_000;

impl H264Encoder {
    /// An encoder for `config`.
    pub fn new(config: EncoderConfig) -> Result<H264Encoder, H264Error> {
        if config.fps == 0 || config.fps > 120 {
            return Err(H264Error::InvalidInput(format!("{} fps", config.fps)));
        }
        let bitrate_bps = config.bitrate_bps.max(MIN_BITRATE_BPS);
        let raw = RawConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(config.fps as f32))
            .skip_frames(true)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .complexity(Complexity::Low)
            .scene_change_detect(false)
            .background_detection(false)
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), raw).map_err(codec)?;
        Ok(H264Encoder {
            encoder,
            config,
            bitrate_bps,
            started: false,
        })
    }

    /// The settings it was made with.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Encodes `picture` (a keyframe when `keyframe`). `None`: the rate control skipped it.
    pub fn encode(
        &mut self,
        picture: &Yuv<'_>,
        keyframe: bool,
    ) -> Result<Option<EncodedFrame>, H264Error> {
        picture.check()?;
        if (picture.width, picture.height) != (self.config.width, self.config.height) {
            return Err(H264Error::InvalidInput(format!(
                "a {}x{} picture for a {}x{} encoder",
                picture.width, picture.height, self.config.width, self.config.height
            )));
        }
        if keyframe && self.started {
            self.encoder.force_intra_frame();
        }
        let stream = self.encoder.encode(picture).map_err(codec)?;
        let frame_type = stream.frame_type();
        let data = stream.to_vec();
        if !self.started {
            // The first encode initialised the encoder at the bitrate it was made with.
            self.started = true;
            let bitrate = self.bitrate_bps;
            self.bitrate_bps = 0;
            self.set_bitrate(bitrate)?;
        }
        match frame_type {
            FrameType::Skip | FrameType::Invalid => Ok(None),
            _ if data.is_empty() => Ok(None),
            FrameType::IDR => Ok(Some(EncodedFrame {
                data,
                keyframe: true,
            })),
            _ => Ok(Some(EncodedFrame {
                keyframe: is_keyframe(&data),
                data,
            })),
        }
    }

    /// Changes the target bitrate from the next frame on.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), H264Error> {
        let bps = bps.max(MIN_BITRATE_BPS);
        if bps == self.bitrate_bps {
            return Ok(());
        }
        self.bitrate_bps = bps;
        if !self.started {
            // Not initialised yet (OpenH264 initialises on the first picture): the
            // bitrate is set after it.
            return Ok(());
        }
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: i32::try_from(bps).unwrap_or(i32::MAX),
        };
        // SAFETY: `raw_api` only hands out the function table and instance that
        // `self.encoder` owns; marked unsafe because calls through it are unchecked.
        let api = unsafe { self.encoder.raw_api() };
        // SAFETY: the instance is initialised (the first picture initialised it:
        // `started`) and outlives the call. ENCODER_OPTION_BITRATE takes a pointer to an
        // SBitrateInfo, which lives on this stack frame for the whole call; OpenH264
        // copies the values and keeps no pointer to it.
        let status = unsafe {
            api.set_option(
                openh264_sys2::ENCODER_OPTION_BITRATE,
                std::ptr::addr_of_mut!(info).cast(),
            )
        };
        if status != 0 {
            return Err(H264Error::Codec(format!(
                "setting the bitrate to {bps}: status {status}"
            )));
        }
        Ok(())
    }

    /// The bitrate asked for now, bit/s.
    pub fn bitrate_bps(&self) -> u32 {
        self.bitrate_bps
    }
}

/// A decoded picture, tightly packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPicture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma, `width * height` bytes.
    pub y: Vec<u8>,
    /// Chroma planes, `width/2 * height/2` bytes each.
    pub u: Vec<u8>,
    /// See `u`.
    pub v: Vec<u8>,
}

/// An H.264 decoder. Not `Sync`: one thread decodes.
pub struct H264Decoder {
    decoder: Decoder,
}

impl H264Decoder {
    /// A decoder waiting for SPS, PPS and an IDR.
    pub fn new() -> Result<H264Decoder, H264Error> {
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder =
            Decoder::with_api_config(OpenH264API::from_source(), config).map_err(codec)?;
        Ok(H264Decoder { decoder })
    }

    /// Decodes one access unit (Annex B). `Ok(None)`: no picture came out of it.
    pub fn decode(&mut self, frame: &[u8]) -> Result<Option<DecodedPicture>, H264Error> {
        if frame.is_empty() {
            return Err(H264Error::InvalidInput("an empty frame".into()));
        }
        let Some(yuv) = self.decoder.decode(frame).map_err(codec)? else {
            return Ok(None);
        };
        let (width, height) = yuv.dimensions();
        let (y_stride, u_stride, v_stride) = yuv.strides();
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        let copy = |plane: &[u8], stride: usize, w: usize, h: usize| {
            let mut out = Vec::with_capacity(w * h);
            for row in plane.chunks(stride.max(1)).take(h) {
                out.extend_from_slice(&row[..w.min(row.len())]);
            }
            out
        };
        let picture = DecodedPicture {
            width: u32::try_from(width).unwrap_or(0),
            height: u32::try_from(height).unwrap_or(0),
            y: copy(yuv.y(), y_stride, width, height),
            u: copy(yuv.u(), u_stride, cw, ch),
            v: copy(yuv.v(), v_stride, cw, ch),
        };
        if picture.y.len() != width * height
            || picture.u.len() != cw * ch
            || picture.v.len() != cw * ch
        {
            return Err(H264Error::Codec(format!(
                "a {width}x{height} picture with short planes"
            )));
        }
        Ok(Some(picture))
    }
}

/// The NAL units of an Annex B stream, start codes removed (each begins with its header).
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &(_, body)) in starts.iter().enumerate() {
        let end = match starts.get(n + 1) {
            // A four-byte start code's leading zero belongs to the start code.
            Some(&(next, _)) if next > body && data[next - 1] == 0 => next - 1,
            Some(&(next, _)) => next,
            None => data.len(),
        };
        if end > body {
            units.push(&data[body..end]);
        }
    }
    units
}

/// A NAL unit's type (the low five bits of its header).
pub fn nal_type(unit: &[u8]) -> Option<u8> {
    unit.first().map(|header| header & 0x1f)
}

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;

/// Whether an Annex B access unit holds an IDR slice.
pub fn is_keyframe(data: &[u8]) -> bool {
    nal_units(data)
        .iter()
        .any(|unit| nal_type(unit) == Some(NAL_IDR))
}

#[cfg(test)]
mod tests;
