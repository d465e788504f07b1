//! Camera capture on Linux (V4L2, through the `v4l` crate), behind the `camera` feature,
//! and the pixel formats cameras deliver turned into I420. The conversions are always
//! built (and tested); the device needs the feature, whose kernel bindings are generated
//! with bindgen at build time (libclang).
//!
//! A camera is asked for the requested size and rate in a format converted here without
//! a decoder: YUYV (4:2:2 packed, what USB webcams give uncompressed), NV12 or I420.
//! Cameras that offer only MJPEG at a size are refused with an error that says so; the
//! file and synthetic sources remain.

use super::{VideoError, VideoFrame};

/// The pixel formats taken, in the order asked for.
pub const FORMATS: [&[u8; 4]; 3] = [b"YU12", b"NV12", b"YUYV"];

/// One captured picture of `format` (a FourCC from [`FORMATS`]), `stride` bytes a row,
/// as I420 of `width` x `height` (odd sizes lose their last column or row).
pub fn to_i420(
    format: &[u8; 4],
    data: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<VideoFrame, VideoError> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0 || h == 0 {
        return Err(VideoError::Picture(format!(
            "a {width}x{height} camera picture"
        )));
    }
    let short = |need: usize| {
        VideoError::Picture(format!(
            "a {} camera picture of {} bytes, {need} needed for {width}x{height}",
            String::from_utf8_lossy(format),
            data.len()
        ))
    };
    let mut frame = VideoFrame::black(w as u32, h as u32);
    let (cw, ch) = (w / 2, h / 2);
    match format {
        b"YUYV" => {
            let stride = (stride as usize).max(w * 2);
            let need = stride * (h - 1) + w * 2;
            if data.len() < need {
                return Err(short(need));
            }
            for row in 0..h {
                let line = &data[row * stride..row * stride + w * 2];
                for (col, pair) in line.chunks_exact(4).enumerate() {
                    frame.y[row * w + col * 2] = pair[0];
                    frame.y[row * w + col * 2 + 1] = pair[2];
                }
            }
            for row in 0..ch {
                let (top, bottom) = (2 * row * stride, (2 * row + 1) * stride);
                for col in 0..cw {
                    let avg = |offset: usize| {
                        let a = u16::from(data[top + col * 4 + offset]);
                        let b = u16::from(data[bottom + col * 4 + offset]);
                        (a + b).div_ceil(2) as u8
                    };
                    frame.u[row * cw + col] = avg(1);
                    frame.v[row * cw + col] = avg(3);
                }
            }
        }
        b"NV12" | b"YU12" => {
            let stride = (stride as usize).max(w);
            let luma = stride * height as usize;
            let need = match format {
                b"NV12" => luma + stride * (ch - 1) + w,
                _ => luma + (stride / 2) * (height as usize / 2) * 2 - (stride / 2 - cw),
            };
            if data.len() < need {
                return Err(short(need));
            }
            for row in 0..h {
                frame.y[row * w..(row + 1) * w].copy_from_slice(&data[row * stride..][..w]);
            }
            if format == b"NV12" {
                for row in 0..ch {
                    let line = &data[luma + row * stride..][..w];
                    for (col, uv) in line.chunks_exact(2).enumerate() {
                        frame.u[row * cw + col] = uv[0];
                        frame.v[row * cw + col] = uv[1];
                    }
                }
            } else {
                let cstride = stride / 2;
                let v_start = luma + cstride * (height as usize / 2);
                for row in 0..ch {
                    frame.u[row * cw..(row + 1) * cw]
                        .copy_from_slice(&data[luma + row * cstride..][..cw]);
                    frame.v[row * cw..(row + 1) * cw]
                        .copy_from_slice(&data[v_start + row * cstride..][..cw]);
                }
            }
        }
        other => {
            return Err(VideoError::Picture(format!(
                "camera pixel format {} is not supported (YUYV, NV12 and I420 are)",
                String::from_utf8_lossy(other)
            )));
        }
    }
    Ok(frame)
}

#[cfg(feature = "camera")]
pub use device::CameraSource;

#[cfg(feature = "camera")]
mod device {
    use v4l::buffer::Type;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::{Device, FourCC};

    use super::super::{FrameTime, VideoError, VideoFrame, VideoSource};
    use super::{FORMATS, to_i420};

    /// A V4L2 capture device delivering pictures at its own pace.
    pub struct CameraSource {
        // The stream maps the device's buffers; it is dropped before the device.
        stream: Stream<'static>,
        _device: Device,
        format: [u8; 4],
        width: u32,
        height: u32,
        stride: u32,
        fps: u32,
    }

    fn no_camera(device: &str, why: impl std::fmt::Display) -> VideoError {
        VideoError::NoCamera {
            detail: format!(" at {device}: {why}"),
        }
    }

    impl CameraSource {
        /// Opens `device` (`/dev/video0` when `None`) at about `width` x `height` and
        /// `fps`, in the first of [`FORMATS`] it offers.
        pub fn open(
            device: Option<&str>,
            width: u32,
            height: u32,
            fps: u32,
        ) -> Result<CameraSource, VideoError> {
            let path = device.unwrap_or("/dev/video0");
            let dev = Device::with_path(path).map_err(|err| no_camera(path, err))?;
            let offered: Vec<[u8; 4]> = dev
                .enum_formats()
                .map_err(|err| no_camera(path, err))?
                .iter()
                .map(|f| f.fourcc.repr)
                .collect();
            let Some(wanted) = FORMATS.iter().find(|f| offered.contains(f)) else {
                let names: Vec<String> = offered
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                return Err(no_camera(
                    path,
                    format!(
                        "it offers {} and none of YUYV, NV12, I420",
                        names.join(", ")
                    ),
                ));
            };
            let mut format = dev.format().map_err(|err| no_camera(path, err))?;
            format.width = width;
            format.height = height;
            format.fourcc = FourCC::new(wanted);
            let format = dev
                .set_format(&format)
                .map_err(|err| no_camera(path, err))?;
            let params = dev
                .set_params(&v4l::video::capture::Parameters::with_fps(fps.max(1)))
                .map_err(|err| no_camera(path, err))?;
            let actual_fps = params
                .interval
                .denominator
                .checked_div(params.interval.numerator)
                .unwrap_or(fps);
            let stream = Stream::with_buffers(&dev, Type::VideoCapture, 4)
                .map_err(|err| no_camera(path, err))?;
            tracing::info!(
                width = format.width,
                height = format.height,
                fps = actual_fps,
                format = %format.fourcc,
                "camera opened"
            );
            Ok(CameraSource {
                stream,
                _device: dev,
                format: format.fourcc.repr,
                width: format.width,
                height: format.height,
                stride: format.stride,
                fps: actual_fps.max(1),
            })
        }
    }

    impl VideoSource for CameraSource {
        fn size(&self) -> (u32, u32) {
            (self.width & !1, self.height & !1)
        }

        fn fps(&self) -> u32 {
            self.fps
        }

        fn read(&mut self, _at: FrameTime) -> Result<Option<VideoFrame>, VideoError> {
            let (data, _meta) = self
                .stream
                .next()
                .map_err(|err| VideoError::Picture(format!("camera capture: {err}")))?;
            to_i420(&self.format, data, self.width, self.height, self.stride).map(Some)
        }

        fn is_realtime(&self) -> bool {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn yuyv_becomes_i420_with_chroma_averaged_over_two_rows() {
        // 4x2: Y ramps, U 100/120 on the two rows, V 200/210.
        let row = |u: u8, v: u8, y0: u8| vec![y0, u, y0 + 1, v, y0 + 2, u, y0 + 3, v];
        let mut data = row(100, 200, 10);
        data.extend(row(120, 210, 20));
        let frame = to_i420(b"YUYV", &data, 4, 2, 8).unwrap();
        assert_eq!(frame.y, vec![10, 11, 12, 13, 20, 21, 22, 23]);
        assert_eq!(frame.u, vec![110, 110]);
        assert_eq!(frame.v, vec![205, 205]);
    }

    #[test]
    fn nv12_and_i420_with_padded_rows() {
        // 4x2 with rows padded to 6 bytes.
        let mut nv12 = vec![1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0];
        nv12.extend([50, 60, 51, 61, 0, 0]);
        let frame = to_i420(b"NV12", &nv12, 4, 2, 6).unwrap();
        assert_eq!(frame.y, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            (frame.u.clone(), frame.v.clone()),
            (vec![50, 51], vec![60, 61])
        );
        let mut i420 = vec![1, 2, 3, 4, 5, 6, 7, 8];
        i420.extend([50, 51, 60, 61]);
        let frame = to_i420(b"YU12", &i420, 4, 2, 4).unwrap();
        assert_eq!((frame.u, frame.v), (vec![50, 51], vec![60, 61]));
    }

    #[test]
    fn short_buffers_and_other_formats_are_errors() {
        assert!(to_i420(b"YUYV", &[0; 10], 4, 2, 8).is_err());
        assert!(to_i420(b"NV12", &[0; 5], 4, 2, 4).is_err());
        assert!(to_i420(b"MJPG", &[0; 100], 4, 2, 4).is_err());
        assert!(to_i420(b"YUYV", &[], 0, 0, 0).is_err());
    }
}

#[cfg(all(test, feature = "camera"))]
mod device_tests {
    use super::*;

    #[test]
    fn a_missing_camera_names_the_file_options() {
        let Err(err) = CameraSource::open(Some("/dev/video-sotto-none"), 640, 360, 30) else {
            panic!("a camera where there is none");
        };
        let text = err.to_string();
        assert!(matches!(err, VideoError::NoCamera { .. }), "{text}");
        assert!(
            text.contains("--video FILE.y4m") && text.contains("test-pattern"),
            "{text}"
        );
    }
}
