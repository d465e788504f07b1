//! The encoders behind a send track, whichever codec it carries: libvpx's
//! multi-resolution VP8 encoder (all layers in one), or one OpenH264 encoder per layer
//! (OpenH264 has no simulcast mode of its own). Same calls either way: pictures in,
//! largest layer first, frames out per layer.

use sotto_h264::H264Encoder;
use sotto_vpx::{EncodedFrame, EncoderConfig, SimulcastEncoder, SimulcastLayer};

use super::{VideoCodec, VideoError, VideoFrame};

/// A send track's encoders.
pub enum Encoders {
    /// VP8, every layer in one encoder.
    Vp8(SimulcastEncoder),
    /// H.264, an encoder per layer (largest first) and the bitrate each is at (0: not
    /// encoded).
    H264(Vec<(H264Encoder, u32)>),
}

impl Encoders {
    /// Encoders of `codec` for `layers` (largest first); `base` gives the frame rate and
    /// VP8's settings.
    pub fn new(
        codec: VideoCodec,
        layers: Vec<SimulcastLayer>,
        base: EncoderConfig,
    ) -> Result<Encoders, VideoError> {
        Ok(match codec {
            VideoCodec::Vp8 => Encoders::Vp8(SimulcastEncoder::new(layers, base)?),
            VideoCodec::H264 => Encoders::H264(
                layers
                    .iter()
                    .map(|layer| {
                        let encoder = H264Encoder::new(sotto_h264::EncoderConfig {
                            width: layer.width,
                            height: layer.height,
                            fps: base.fps,
                            bitrate_bps: layer.bitrate_bps,
                        })?;
                        Ok((encoder, layer.bitrate_bps))
                    })
                    .collect::<Result<_, VideoError>>()?,
            ),
        })
    }

    /// Sets layer `index`'s bitrate (largest first); 0 stops encoding it.
    pub fn set_bitrate(&mut self, index: usize, bps: u32) -> Result<(), VideoError> {
        match self {
            Encoders::Vp8(encoder) => encoder.set_bitrate(index, bps)?,
            Encoders::H264(encoders) => {
                let Some((encoder, at)) = encoders.get_mut(index) else {
                    return Err(VideoError::Picture(format!("no layer {index}")));
                };
                if bps > 0 {
                    encoder.set_bitrate(bps)?;
                }
                *at = bps;
            }
        }
        Ok(())
    }

    /// Encodes one picture per layer (largest first); `keyframes[i]` asks layer i for a
    /// keyframe. Returns each layer's frames.
    pub fn encode(
        &mut self,
        pictures: &[VideoFrame],
        pts: i64,
        keyframes: &[bool],
    ) -> Result<Vec<Vec<EncodedFrame>>, VideoError> {
        match self {
            Encoders::Vp8(encoder) => {
                let views: Vec<sotto_vpx::I420<'_>> =
                    pictures.iter().map(VideoFrame::as_i420).collect();
                Ok(encoder.encode(&views, pts, keyframes)?)
            }
            Encoders::H264(encoders) => {
                let mut out = Vec::with_capacity(encoders.len());
                for (i, ((encoder, bps), picture)) in encoders.iter_mut().zip(pictures).enumerate()
                {
                    if *bps == 0 {
                        out.push(Vec::new());
                        continue;
                    }
                    let keyframe = keyframes.get(i).copied().unwrap_or(false);
                    let frame = encoder.encode(&picture.as_yuv(), keyframe)?;
                    out.push(
                        frame
                            .map(|frame| EncodedFrame {
                                data: frame.data,
                                keyframe: frame.keyframe,
                                temporal_layer: 0,
                                layer_sync: false,
                                pts,
                            })
                            .into_iter()
                            .collect(),
                    );
                }
                Ok(out)
            }
        }
    }
}
