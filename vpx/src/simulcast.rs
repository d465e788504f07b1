//! Simulcast in one libvpx multi-resolution encoder: the layers are encoded together
//! (lower resolutions first, their motion search reused by the higher ones), each with its
//! own bitrate, temporal pattern and keyframe requests. A layer at 0 bit/s is skipped
//! (nobody watches it). The caller scales the source to every layer's size.

use std::os::raw::{c_int, c_ulong};

use vpx_sys as ffi;

use crate::encoder::{
    CLOCK_RATE, EncodedFrame, EncoderConfig, check_config, control, default_cfg, drain_packets,
    realtime_cfg, realtime_controls, set_bitrate_cfg, zeroed_ctx,
};
use crate::{I420, VpxError, check};

/// The most layers one encoder takes (libvpx's own limit is 5).
pub const MAX_LAYERS: usize = 3;

/// One layer of a simulcast encoder, largest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastLayer {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Target bitrate, bit/s (0: not encoded).
    pub bitrate_bps: u32,
}

/// Several resolutions of one source, encoded together. See the module's comment.
pub struct SimulcastEncoder {
    /// One context per layer, contiguous as libvpx's multi-resolution API requires, boxed
    /// so their addresses stay fixed.
    ctx: Box<[ffi::vpx_codec_ctx_t]>,
    cfg: Box<[ffi::vpx_codec_enc_cfg_t]>,
    layers: Vec<SimulcastLayer>,
    /// Shared settings (fps, temporal layers, speed); the size and bitrate are per layer.
    base: EncoderConfig,
    /// Position in each layer's temporal pattern.
    pattern_index: Vec<usize>,
}

// SAFETY: the contexts are only touched through `&mut self`, and libvpx encoder contexts
// may move between threads.
unsafe impl Send for SimulcastEncoder {}

impl std::fmt::Debug for SimulcastEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulcastEncoder")
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

impl SimulcastEncoder {
    /// An encoder for `layers` (largest first, each at most the size of the one before),
    /// with `base`'s frame rate, temporal layers, speed and threads.
    pub fn new(layers: Vec<SimulcastLayer>, base: EncoderConfig) -> Result<Self, VpxError> {
        if layers.is_empty() || layers.len() > MAX_LAYERS {
            return Err(VpxError::InvalidInput(format!(
                "{} simulcast layers (1 to {MAX_LAYERS})",
                layers.len()
            )));
        }
        let mut cfgs = Vec::with_capacity(layers.len());
        let mut factors = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let config = EncoderConfig {
                width: layer.width,
                height: layer.height,
                bitrate_bps: layer.bitrate_bps,
                ..base.clone()
            };
            check_config(&config)?;
            let mut cfg = *default_cfg()?;
            realtime_cfg(&mut cfg, &config);
            if layer.bitrate_bps == 0 {
                set_bitrate_cfg(&mut cfg, 0, base.temporal_layers);
                cfg.rc_target_bitrate = 0;
            }
            // Only the largest layer may use several threads (libvpx's rule for
            // multi-resolution encoding).
            if i > 0 {
                cfg.g_threads = 1;
            }
            // The down-sampling factor from the layer above to this one.
            if let Some(above) = i.checked_sub(1).map(|j| &layers[j]) {
                if layer.width > above.width || layer.height > above.height {
                    return Err(VpxError::InvalidInput(
                        "simulcast layers must go from largest to smallest".into(),
                    ));
                }
                factors.push(ffi::vpx_rational {
                    num: (above.width / layer.width.max(1)).max(1) as c_int,
                    den: 1,
                });
            }
            cfgs.push(cfg);
        }
        factors.push(ffi::vpx_rational { num: 1, den: 1 });
        let mut cfg: Box<[ffi::vpx_codec_enc_cfg_t]> = cfgs.into_boxed_slice();
        let mut ctx: Box<[ffi::vpx_codec_ctx_t]> =
            (0..layers.len()).map(|_| *zeroed_ctx()).collect();
        // SAFETY: `ctx` and `cfg` are contiguous arrays of `layers.len()` entries that stay
        // at fixed addresses (boxed slices owned by the encoder); `factors` has one entry
        // per layer and libvpx copies it during the call; the interface is the static VP8
        // encoder and the ABI version is the bindings' own.
        let status = unsafe {
            ffi::vpx_codec_enc_init_multi_ver(
                ctx.as_mut_ptr(),
                crate::vp8_cx(),
                cfg.as_mut_ptr(),
                layers.len() as c_int,
                0,
                factors.as_mut_ptr(),
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        check("vpx_codec_enc_init_multi", status, ctx.first_mut())?;
        let pattern_index = vec![0; layers.len()];
        let mut encoder = SimulcastEncoder {
            ctx,
            cfg,
            layers,
            base,
            pattern_index,
        };
        for i in 0..encoder.layers.len() {
            let config = EncoderConfig {
                width: encoder.layers[i].width,
                height: encoder.layers[i].height,
                ..encoder.base.clone()
            };
            realtime_controls(&mut encoder.ctx[i], &config)?;
        }
        Ok(encoder)
    }

    /// The layers, largest first, with their current bitrates.
    pub fn layers(&self) -> &[SimulcastLayer] {
        &self.layers
    }

    /// Sets layer `index`'s bitrate from the next frame on; 0 stops encoding it.
    pub fn set_bitrate(&mut self, index: usize, bitrate_bps: u32) -> Result<(), VpxError> {
        let Some(layer) = self.layers.get_mut(index) else {
            return Err(VpxError::InvalidInput(format!(
                "no simulcast layer {index}"
            )));
        };
        if layer.bitrate_bps / 1000 == bitrate_bps / 1000 {
            return Ok(());
        }
        let cfg = &mut self.cfg[index];
        set_bitrate_cfg(cfg, bitrate_bps, self.base.temporal_layers);
        if bitrate_bps < 1000 {
            cfg.rc_target_bitrate = 0;
        }
        // SAFETY: the context is initialised and `cfg` is its complete configuration.
        let status = unsafe { ffi::vpx_codec_enc_config_set(&mut self.ctx[index], &*cfg) };
        check(
            "vpx_codec_enc_config_set",
            status,
            Some(&mut self.ctx[index]),
        )?;
        if layer.bitrate_bps < 1000 && bitrate_bps >= 1000 {
            // A layer that comes back starts with a keyframe.
            self.pattern_index[index] = 0;
        }
        layer.bitrate_bps = bitrate_bps;
        Ok(())
    }

    /// Encodes one source frame: `pictures[i]` is layer `i`'s picture at its size,
    /// `keyframes[i]` asks layer `i` for a keyframe. Returns per layer what it produced
    /// (nothing for a paused layer or a skipped frame).
    pub fn encode(
        &mut self,
        pictures: &[I420<'_>],
        pts: i64,
        keyframes: &[bool],
    ) -> Result<Vec<Vec<EncodedFrame>>, VpxError> {
        let n = self.layers.len();
        if pictures.len() != n || keyframes.len() != n {
            return Err(VpxError::InvalidInput(format!(
                "{} pictures and {} keyframe flags for {n} layers",
                pictures.len(),
                keyframes.len()
            )));
        }
        let mut steps = Vec::with_capacity(n);
        for (i, picture) in pictures.iter().enumerate() {
            picture.check()?;
            let layer = &self.layers[i];
            if picture.width != layer.width || picture.height != layer.height {
                return Err(VpxError::InvalidInput(format!(
                    "a {}x{} picture for the {}x{} layer",
                    picture.width, picture.height, layer.width, layer.height
                )));
            }
            if keyframes[i] {
                self.pattern_index[i] = 0;
            }
            let (step_layer, sync, flags) = crate::encoder::frame_step(
                self.base.temporal_layers,
                self.pattern_index[i],
                keyframes[i],
            );
            control(
                &mut self.ctx[i],
                ffi::vp8e_enc_control_id::VP8E_SET_FRAME_FLAGS,
                flags as c_int,
            )?;
            if self.base.temporal_layers > 1 {
                control(
                    &mut self.ctx[i],
                    ffi::vp8e_enc_control_id::VP8E_SET_TEMPORAL_LAYER_ID,
                    c_int::from(step_layer),
                )?;
            }
            steps.push((step_layer, sync));
        }
        let images: Vec<ffi::vpx_image_t> = pictures.iter().map(|p| p.to_vpx_image()).collect();
        let duration = (CLOCK_RATE as u32 / self.base.fps.max(1)) as c_ulong;
        // SAFETY: with a multi-resolution context, vpx_codec_encode walks `n` contexts from
        // the first and `n` images from `images`' start: both arrays hold exactly `n`
        // entries. Every image points into planes `check` proved large enough, alive for
        // the call; libvpx does not keep them (no lookahead).
        let status = unsafe {
            ffi::vpx_codec_encode(
                self.ctx.as_mut_ptr(),
                images.as_ptr(),
                pts,
                duration,
                0,
                ffi::VPX_DL_REALTIME as c_ulong,
            )
        };
        check("vpx_codec_encode", status, self.ctx.first_mut())?;
        let mut out = Vec::with_capacity(n);
        for (i, (step_layer, sync)) in steps.into_iter().enumerate() {
            let mut frames = Vec::new();
            if self.layers[i].bitrate_bps < 1000 {
                // libvpx returns early for a layer at 0 bit/s and leaves its previous
                // packet in the list: there is nothing new to read.
                out.push(frames);
                continue;
            }
            drain_packets(&mut self.ctx[i], |data, key, pts| {
                frames.push(EncodedFrame {
                    data,
                    keyframe: key,
                    temporal_layer: if key { 0 } else { step_layer },
                    layer_sync: key || sync,
                    pts,
                })
            });
            if !frames.is_empty() {
                self.pattern_index[i] += 1;
            }
            out.push(frames);
        }
        Ok(out)
    }
}

impl Drop for SimulcastEncoder {
    fn drop(&mut self) {
        for ctx in self.ctx.iter_mut() {
            // SAFETY: every context was initialised by the multi-resolution init and is
            // destroyed once, here.
            unsafe {
                ffi::vpx_codec_destroy(ctx);
            }
        }
    }
}
