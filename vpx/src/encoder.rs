//! One VP8 encoder at one resolution: real-time CBR with no lookahead, keyframes when
//! asked, the bitrate changed between frames, and 1 to 3 temporal layers.

use std::os::raw::{c_int, c_long, c_uint, c_ulong};

use vpx_sys as ffi;

use crate::{I420, VpxError, check};

/// RTP's video clock: timestamps given to the encoder count 90 kHz ticks.
pub const CLOCK_RATE: i32 = 90_000;

/// How an encoder starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second the source delivers (for rate control).
    pub fps: u32,
    /// Target bitrate, bit/s.
    pub bitrate_bps: u32,
    /// Temporal layers, 1 to 3 (2 and 3 use the patterns browsers send: base layer at
    /// half or a quarter of the frame rate).
    pub temporal_layers: u8,
    /// libvpx's speed (`cpu-used`): -16 (slowest) to 16; real-time calls use -6 to -12.
    pub speed: i32,
    /// Encoder threads.
    pub threads: u32,
    /// Let the rate control skip frames when the budget runs out.
    pub frame_dropping: bool,
}

impl EncoderConfig {
    /// Real-time defaults for a `width`x`height` stream at `fps` and `bitrate_bps`.
    pub fn realtime(width: u32, height: u32, fps: u32, bitrate_bps: u32) -> Self {
        EncoderConfig {
            width,
            height,
            fps,
            bitrate_bps,
            temporal_layers: 1,
            // WebRTC's choice for VP8 on desktop machines.
            speed: -6,
            threads: 1,
            frame_dropping: true,
        }
    }
}

/// One encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 frame (RFC 6386), ready for the payloader.
    pub data: Vec<u8>,
    /// A keyframe: decodable on its own.
    pub keyframe: bool,
    /// Its temporal layer (0: base).
    pub temporal_layer: u8,
    /// It references only the base layer, so a receiver may switch up to its layer here.
    pub layer_sync: bool,
    /// The timestamp it was given, 90 kHz.
    pub pts: i64,
}

/// The flags of one frame position in a temporal pattern, and its layer.
#[derive(Debug, Clone, Copy)]
struct PatternStep {
    layer: u8,
    flags: u32,
    sync: bool,
}

const NO_REF_GF: u32 = ffi::VP8_EFLAG_NO_REF_GF;
const NO_REF_ARF: u32 = ffi::VP8_EFLAG_NO_REF_ARF;
const NO_UPD_LAST: u32 = ffi::VP8_EFLAG_NO_UPD_LAST;
const NO_UPD_GF: u32 = ffi::VP8_EFLAG_NO_UPD_GF;
const NO_UPD_ARF: u32 = ffi::VP8_EFLAG_NO_UPD_ARF;
const NO_UPD_ENTROPY: u32 = ffi::VP8_EFLAG_NO_UPD_ENTROPY;

/// The base layer references and updates LAST only, so it decodes without the others.
const BASE: PatternStep = PatternStep {
    layer: 0,
    flags: NO_REF_GF | NO_REF_ARF | NO_UPD_GF | NO_UPD_ARF,
    sync: true,
};

/// Temporal patterns (as libvpx's temporal SVC example and browsers lay them out): upper
/// layers never update LAST or the entropy context, so dropping them leaves the base
/// layer intact.
fn pattern(layers: u8) -> &'static [PatternStep] {
    const TWO: [PatternStep; 2] = [
        BASE,
        PatternStep {
            layer: 1,
            flags: NO_REF_GF | NO_REF_ARF | NO_UPD_LAST | NO_UPD_GF | NO_UPD_ARF | NO_UPD_ENTROPY,
            sync: true,
        },
    ];
    const THREE: [PatternStep; 4] = [
        BASE,
        // Layer 2 from the base alone.
        PatternStep {
            layer: 2,
            flags: NO_REF_GF | NO_REF_ARF | NO_UPD_LAST | NO_UPD_GF | NO_UPD_ARF | NO_UPD_ENTROPY,
            sync: true,
        },
        // Layer 1 from the base, kept in GOLDEN for the next layer-2 frame.
        PatternStep {
            layer: 1,
            flags: NO_REF_GF | NO_REF_ARF | NO_UPD_LAST | NO_UPD_ARF | NO_UPD_ENTROPY,
            sync: true,
        },
        // Layer 2 from the base and layer 1.
        PatternStep {
            layer: 2,
            flags: NO_REF_ARF | NO_UPD_LAST | NO_UPD_GF | NO_UPD_ARF | NO_UPD_ENTROPY,
            sync: false,
        },
    ];
    const ONE: [PatternStep; 1] = [PatternStep {
        layer: 0,
        flags: 0,
        sync: true,
    }];
    match layers {
        2 => &TWO,
        3 => &THREE,
        _ => &ONE,
    }
}

/// Each temporal layer's share of the bitrate, cumulative (WebRTC's split).
fn layer_shares(layers: u8) -> &'static [f64] {
    match layers {
        2 => &[0.6, 1.0],
        3 => &[0.4, 0.6, 1.0],
        _ => &[1.0],
    }
}

/// Fills `cfg` with real-time settings for `config` (on top of libvpx's defaults).
pub(crate) fn realtime_cfg(cfg: &mut ffi::vpx_codec_enc_cfg_t, config: &EncoderConfig) {
    cfg.g_w = config.width;
    cfg.g_h = config.height;
    cfg.g_threads = config.threads.max(1);
    cfg.g_timebase = ffi::vpx_rational {
        num: 1,
        den: CLOCK_RATE,
    };
    cfg.g_lag_in_frames = 0;
    cfg.g_pass = ffi::vpx_enc_pass::VPX_RC_ONE_PASS;
    // Keyframes come when the call asks for them (a receiver's PLI), not on a timer.
    cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
    cfg.kf_max_dist = 3000;
    cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
    cfg.rc_dropframe_thresh = if config.frame_dropping { 30 } else { 0 };
    cfg.rc_resize_allowed = 0;
    cfg.rc_min_quantizer = 2;
    cfg.rc_max_quantizer = 56;
    cfg.rc_undershoot_pct = 100;
    cfg.rc_overshoot_pct = 15;
    cfg.rc_buf_initial_sz = 500;
    cfg.rc_buf_optimal_sz = 600;
    cfg.rc_buf_sz = 1000;
    // Upper layers may be dropped on the way: each frame must not depend on the previous
    // frame's entropy state beyond what the pattern keeps.
    cfg.g_error_resilient = if config.temporal_layers > 1 { 1 } else { 0 };
    set_bitrate_cfg(cfg, config.bitrate_bps, config.temporal_layers);
}

/// Sets the target bitrate and, with temporal layers, each layer's cumulative share.
pub(crate) fn set_bitrate_cfg(cfg: &mut ffi::vpx_codec_enc_cfg_t, bitrate_bps: u32, layers: u8) {
    let kbps = (bitrate_bps / 1000).max(1);
    cfg.rc_target_bitrate = kbps;
    let layers = layers.clamp(1, 3);
    if layers > 1 {
        let steps = pattern(layers);
        cfg.ts_number_layers = c_uint::from(layers);
        cfg.ts_periodicity = steps.len() as c_uint;
        for (i, step) in steps.iter().enumerate() {
            cfg.ts_layer_id[i] = c_uint::from(step.layer);
        }
        for (i, share) in layer_shares(layers).iter().enumerate() {
            cfg.ts_target_bitrate[i] = ((f64::from(kbps) * share) as c_uint).max(1);
            cfg.ts_rate_decimator[i] = 1 << (layers as usize - 1 - i);
        }
    } else {
        cfg.ts_number_layers = 1;
        cfg.ts_periodicity = 1;
        cfg.ts_layer_id[0] = 0;
        cfg.ts_target_bitrate[0] = kbps;
        cfg.ts_rate_decimator[0] = 1;
    }
}

/// The controls every real-time encoder gets after init.
pub(crate) fn realtime_controls(
    ctx: &mut ffi::vpx_codec_ctx_t,
    config: &EncoderConfig,
) -> Result<(), VpxError> {
    // A keyframe may take up to this share of a frame's budget (WebRTC's rule: half the
    // optimal buffer, in frames, as a percentage; at least 3 frames' worth).
    let max_intra_pct = (600.0 * 0.5 * config.fps.max(1) as f64 / 10.0).max(300.0) as c_int;
    control(
        ctx,
        ffi::vp8e_enc_control_id::VP8E_SET_CPUUSED,
        config.speed,
    )?;
    control(ctx, ffi::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0)?;
    control(ctx, ffi::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 1)?;
    control(ctx, ffi::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS, 0)?;
    control(
        ctx,
        ffi::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT,
        max_intra_pct,
    )
}

/// One integer control on an encoder.
pub(crate) fn control(
    ctx: &mut ffi::vpx_codec_ctx_t,
    id: ffi::vp8e_enc_control_id,
    value: c_int,
) -> Result<(), VpxError> {
    // SAFETY: `ctx` is an initialised encoder context; every control passed here takes
    // one `int` argument, which is what the variadic call receives.
    let status = unsafe { ffi::vpx_codec_control_(ctx, id as c_int, value) };
    check("vpx_codec_control", status, Some(ctx))
}

/// The layer, whether it is a sync point, and the encode flags for the frame at `index`
/// in the pattern; a base-layer keyframe when asked.
pub(crate) fn frame_step(layers: u8, index: usize, keyframe: bool) -> (u8, bool, c_long) {
    if keyframe {
        return (0, true, ffi::VPX_EFLAG_FORCE_KF as c_long);
    }
    let steps = pattern(layers);
    let step = steps[index % steps.len()];
    (step.layer, step.sync, step.flags as c_long)
}

/// A VP8 encoder. Not `Sync`: one thread encodes.
pub struct Vp8Encoder {
    /// Boxed so that its address stays fixed: libvpx keeps pointers into it.
    ctx: Box<ffi::vpx_codec_ctx_t>,
    cfg: Box<ffi::vpx_codec_enc_cfg_t>,
    config: EncoderConfig,
    /// Position in the temporal pattern.
    pattern_index: usize,
}

// SAFETY: the context is only touched through `&mut self`, and libvpx encoder contexts
// may move between threads (they hold no thread-local state).
unsafe impl Send for Vp8Encoder {}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A zeroed codec context, for libvpx's init to fill in.
pub(crate) fn zeroed_ctx() -> Box<ffi::vpx_codec_ctx_t> {
    // SAFETY: vpx_codec_ctx_t holds pointers, integers, a union of pointers and an error
    // enum whose zero is VPX_CODEC_OK: all-zero bytes are a valid value (and what libvpx's
    // own examples start from).
    Box::new(unsafe { std::mem::zeroed::<ffi::vpx_codec_ctx_t>() })
}

/// libvpx's default encoder configuration for VP8.
pub(crate) fn default_cfg() -> Result<Box<ffi::vpx_codec_enc_cfg_t>, VpxError> {
    let mut cfg = Box::new(std::mem::MaybeUninit::<ffi::vpx_codec_enc_cfg_t>::uninit());
    // SAFETY: the interface is libvpx's static VP8 encoder; `cfg` points to writable
    // memory of the configuration's size and layout (bindings for this libvpx version),
    // which vpx_codec_enc_config_default overwrites whole on success.
    let status = unsafe { ffi::vpx_codec_enc_config_default(crate::vp8_cx(), cfg.as_mut_ptr(), 0) };
    check("vpx_codec_enc_config_default", status, None)?;
    // SAFETY: the call succeeded, so every field was written.
    Ok(unsafe { cfg.assume_init() })
}

pub(crate) fn check_config(config: &EncoderConfig) -> Result<(), VpxError> {
    if config.width == 0
        || config.height == 0
        || config.width > 16_384
        || config.height > 16_384
        || config.fps == 0
        || !(1..=3).contains(&config.temporal_layers)
        || !(-16..=16).contains(&config.speed)
    {
        return Err(VpxError::InvalidInput(format!(
            "encoder configuration {config:?}"
        )));
    }
    Ok(())
}

impl Vp8Encoder {
    /// An encoder as `config` says.
    pub fn new(config: EncoderConfig) -> Result<Self, VpxError> {
        check_config(&config)?;
        let mut cfg = default_cfg()?;
        realtime_cfg(&mut cfg, &config);
        let mut ctx = zeroed_ctx();
        // SAFETY: `ctx` and `cfg` are boxed (fixed addresses for the encoder's life), the
        // interface is libvpx's static VP8 encoder, and the ABI version is the one these
        // bindings were generated for (checked against pkg-config at build time).
        let status = unsafe {
            ffi::vpx_codec_enc_init_ver(
                &mut *ctx,
                crate::vp8_cx(),
                &*cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        check("vpx_codec_enc_init", status, Some(&mut ctx))?;
        let mut encoder = Vp8Encoder {
            ctx,
            cfg,
            config,
            pattern_index: 0,
        };
        realtime_controls(&mut encoder.ctx, &encoder.config)?;
        Ok(encoder)
    }

    /// The configuration (with the current bitrate).
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Changes the target bitrate from the next frame on.
    pub fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), VpxError> {
        if bitrate_bps / 1000 == self.config.bitrate_bps / 1000 {
            return Ok(());
        }
        set_bitrate_cfg(&mut self.cfg, bitrate_bps, self.config.temporal_layers);
        // SAFETY: `ctx` is initialised and `cfg` is a complete configuration for it.
        let status = unsafe { ffi::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg) };
        check("vpx_codec_enc_config_set", status, Some(&mut self.ctx))?;
        self.config.bitrate_bps = bitrate_bps;
        Ok(())
    }

    /// Encodes `picture` (its size must be the configured one) taken at `pts` (90 kHz);
    /// a keyframe when `keyframe`. Returns what the encoder produced: usually one frame,
    /// none when the rate control skips it.
    pub fn encode(
        &mut self,
        picture: &I420<'_>,
        pts: i64,
        keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VpxError> {
        picture.check()?;
        if picture.width != self.config.width || picture.height != self.config.height {
            return Err(VpxError::InvalidInput(format!(
                "a {}x{} picture for a {}x{} encoder",
                picture.width, picture.height, self.config.width, self.config.height
            )));
        }
        if keyframe {
            self.pattern_index = 0;
        }
        let (layer, sync, flags) =
            frame_step(self.config.temporal_layers, self.pattern_index, keyframe);
        if self.config.temporal_layers > 1 {
            control(
                &mut self.ctx,
                ffi::vp8e_enc_control_id::VP8E_SET_TEMPORAL_LAYER_ID,
                c_int::from(layer),
            )?;
        }
        let image = picture.to_vpx_image();
        let duration = (CLOCK_RATE as u32 / self.config.fps.max(1)) as c_ulong;
        // SAFETY: `image` points into `picture`'s planes, which `check` proved large enough
        // for its size and strides and which outlive this call; libvpx copies what it
        // needs before returning (no lookahead: g_lag_in_frames is 0).
        let status = unsafe {
            ffi::vpx_codec_encode(
                &mut *self.ctx,
                &image,
                pts,
                duration,
                flags,
                ffi::VPX_DL_REALTIME as c_ulong,
            )
        };
        check("vpx_codec_encode", status, Some(&mut self.ctx))?;
        let mut frames = Vec::new();
        drain_packets(&mut self.ctx, |data, key, pts| {
            frames.push(EncodedFrame {
                data,
                keyframe: key,
                temporal_layer: if key { 0 } else { layer },
                layer_sync: key || sync,
                pts,
            })
        });
        // A frame the rate control skipped updated no reference: its step comes again.
        if !frames.is_empty() {
            self.pattern_index += 1;
        }
        Ok(frames)
    }
}

/// Hands every frame packet the encoder has ready to `out` (data, keyframe, pts).
pub(crate) fn drain_packets(
    ctx: &mut ffi::vpx_codec_ctx_t,
    mut out: impl FnMut(Vec<u8>, bool, i64),
) {
    let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
    loop {
        // SAFETY: `ctx` is an initialised encoder and `iter` starts null as the API asks;
        // the packet stays valid until the next call on this context.
        let packet = unsafe { ffi::vpx_codec_get_cx_data(ctx, &mut iter) };
        // SAFETY: a non-null packet points to a valid vpx_codec_cx_pkt_t owned by the
        // context.
        let Some(packet) = (unsafe { packet.as_ref() }) else {
            break;
        };
        if packet.kind != ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
            continue;
        }
        // SAFETY: for a frame packet the union holds `frame`.
        let frame = unsafe { packet.data.frame };
        if frame.buf.is_null() || frame.sz == 0 {
            continue;
        }
        // SAFETY: libvpx guarantees `buf` holds `sz` bytes until the next call on the
        // context; we copy them out now.
        let data = unsafe { std::slice::from_raw_parts(frame.buf.cast::<u8>(), frame.sz as usize) }
            .to_vec();
        out(data, frame.flags & ffi::VPX_FRAME_IS_KEY != 0, frame.pts);
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: `ctx` was initialised in `new` and is destroyed once, here.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}
