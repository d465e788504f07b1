//! Video: one source/sink interface, as `audio` has, over a synthetic test pattern that
//! carries a machine-readable frame code ([`code`]), Y4M files ([`y4m`]) and, behind the
//! `camera` feature, a capture device; I420 scaling for simulcast layers ([`scale`]).
//!
//! Pictures inside the engine are tightly packed I420 ([`VideoFrame`]). The codecs live in
//! the `sotto-vpx` (VP8) and `sotto-h264` (H.264) crates, a send track's encoders in
//! [`encode`], their RTP formats in [`vp8_rtp`] and [`h264_rtp`], the receiving end in
//! [`receive`]; this module must not touch signaling or call state.

pub mod camera;
pub mod code;
pub mod encode;
pub mod h264_rtp;
pub mod pattern;
pub mod quality;
pub mod receive;
pub mod scale;
pub mod vp8_rtp;
pub mod window;
pub mod y4m;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// A picture: tightly packed I420 (luma `width * height`, each chroma plane
/// `ceil(width/2) * ceil(height/2)`).
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma.
    pub y: Vec<u8>,
    /// Blue-difference chroma.
    pub u: Vec<u8>,
    /// Red-difference chroma.
    pub v: Vec<u8>,
}

impl std::fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VideoFrame({}x{})", self.width, self.height)
    }
}

impl VideoFrame {
    /// A black picture.
    pub fn black(width: u32, height: u32) -> VideoFrame {
        let (luma, chroma) = plane_sizes(width, height);
        VideoFrame {
            width,
            height,
            y: vec![16; luma],
            u: vec![128; chroma],
            v: vec![128; chroma],
        }
    }

    /// Chroma planes' width.
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Chroma planes' height.
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// Whether the planes have the sizes the dimensions say.
    pub fn is_consistent(&self) -> bool {
        let (luma, chroma) = plane_sizes(self.width, self.height);
        self.width > 0
            && self.height > 0
            && self.y.len() == luma
            && self.u.len() == chroma
            && self.v.len() == chroma
    }

    /// The picture as the codec takes it.
    pub fn as_i420(&self) -> sotto_vpx::I420<'_> {
        sotto_vpx::I420 {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            y_stride: self.width as usize,
            uv_stride: self.chroma_width() as usize,
        }
    }

    /// The picture as OpenH264 takes it.
    pub fn as_yuv(&self) -> sotto_h264::Yuv<'_> {
        sotto_h264::Yuv {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            y_stride: self.width as usize,
            uv_stride: self.chroma_width() as usize,
        }
    }

    /// A picture OpenH264 decoded, taken over.
    pub fn from_h264(frame: sotto_h264::DecodedPicture) -> VideoFrame {
        VideoFrame {
            width: frame.width,
            height: frame.height,
            y: frame.y,
            u: frame.u,
            v: frame.v,
        }
    }

    /// A decoded picture, taken over.
    pub fn from_decoded(frame: sotto_vpx::DecodedFrame) -> VideoFrame {
        VideoFrame {
            width: frame.width,
            height: frame.height,
            y: frame.y,
            u: frame.u,
            v: frame.v,
        }
    }
}

/// Bytes of the luma plane and of each chroma plane of a `width`x`height` picture.
pub fn plane_sizes(width: u32, height: u32) -> (usize, usize) {
    let luma = width as usize * height as usize;
    let chroma = width.div_ceil(2) as usize * height.div_ceil(2) as usize;
    (luma, chroma)
}

/// When and which frame a source is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTime {
    /// Frames since capture started.
    pub index: u64,
    /// The capture instant on the wall clock, ms since the Unix epoch (what the test
    /// pattern writes into its code, so that a receiver on the same clock measures
    /// glass-to-glass delay).
    pub wall_ms: u64,
}

/// Something that produces pictures.
pub trait VideoSource: Send {
    /// The size of the pictures it gives.
    fn size(&self) -> (u32, u32);

    /// Frames per second it gives (files: as their header says).
    fn fps(&self) -> u32;

    /// The next picture, for capture at `at`. A real-time source (a camera) blocks until
    /// one is captured; the others return at once and leave pacing to the caller.
    /// `Ok(None)` at the end of the input (a file played once).
    fn read(&mut self, at: FrameTime) -> Result<Option<VideoFrame>, VideoError>;

    /// True when the source keeps its own time (a camera).
    fn is_realtime(&self) -> bool;
}

/// Something that consumes pictures.
pub trait VideoSink: Send {
    /// Takes the next picture (its size may change between calls).
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError>;

    /// Flushes and closes. Idempotent.
    fn finish(&mut self) -> Result<(), VideoError>;
}

/// The default size of the test pattern and of camera capture: the top simulcast layer.
pub const DEFAULT_SIZE: (u32, u32) = (640, 360);
/// The default frame rate of the test pattern.
pub const DEFAULT_FPS: u32 = 30;

/// Where video comes from, as the command line names it (`--video SPEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSpec {
    /// No video.
    None,
    /// The synthetic moving pattern with its frame code, at this size and rate.
    TestPattern {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Frames per second.
        fps: u32,
    },
    /// A Y4M file (4:2:0, 8 bits), played in a loop.
    Y4m(PathBuf),
    /// A capture device: the first one, or the one named (`/dev/video0`).
    Camera(Option<String>),
}

/// `none`, `test-pattern` (optionally `test-pattern:1280x720` or `test-pattern:1280x720@15`),
/// `camera` or `camera:DEVICE`, or a path ending in `.y4m`.
impl FromStr for VideoSpec {
    type Err = VideoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VideoError::BadSpec(s.to_owned());
        if s == "none" {
            return Ok(VideoSpec::None);
        }
        if s == "camera" {
            return Ok(VideoSpec::Camera(None));
        }
        if let Some(device) = s.strip_prefix("camera:") {
            return Ok(VideoSpec::Camera(Some(device.to_owned())));
        }
        if s == "test-pattern" {
            return Ok(VideoSpec::TestPattern {
                width: DEFAULT_SIZE.0,
                height: DEFAULT_SIZE.1,
                fps: DEFAULT_FPS,
            });
        }
        if let Some(size) = s.strip_prefix("test-pattern:") {
            let (size, fps) = match size.split_once('@') {
                Some((size, fps)) => (size, fps.parse::<u32>().map_err(|_| bad())?),
                None => (size, DEFAULT_FPS),
            };
            let (w, h) = size.split_once('x').ok_or_else(bad)?;
            let width: u32 = w.parse().map_err(|_| bad())?;
            let height: u32 = h.parse().map_err(|_| bad())?;
            if !(16..=3840).contains(&width) || !(16..=2160).contains(&height) {
                return Err(bad());
            }
            if !(1..=60).contains(&fps) {
                return Err(bad());
            }
            return Ok(VideoSpec::TestPattern { width, height, fps });
        }
        if s.len() > 4 && s.to_ascii_lowercase().ends_with(".y4m") {
            return Ok(VideoSpec::Y4m(PathBuf::from(s)));
        }
        Err(bad())
    }
}

/// The video codecs the engine speaks. Both are offered to receive; VP8 is sent unless
/// asked otherwise or the peer offers no VP8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// VP8 (libvpx): simulcast, temporal layers.
    #[default]
    Vp8,
    /// H.264 Constrained Baseline (OpenH264): for peers without VP8.
    H264,
}

impl VideoCodec {
    /// The codec of a negotiated MIME type (`video/VP8`, `video/H264`, any case).
    pub fn from_mime(mime: &str) -> Option<VideoCodec> {
        let mime = mime.to_ascii_lowercase();
        match mime.strip_prefix("video/").unwrap_or(&mime) {
            "vp8" => Some(VideoCodec::Vp8),
            "h264" => Some(VideoCodec::H264),
            _ => None,
        }
    }

    /// Its name in SDP (`VP8`, `H264`).
    pub fn sdp_name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
        }
    }
}

/// `vp8` or `h264`.
impl FromStr for VideoCodec {
    type Err = VideoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vp8" => Ok(VideoCodec::Vp8),
            "h264" | "h.264" | "avc" => Ok(VideoCodec::H264),
            _ => Err(VideoError::BadCodec(s.to_owned())),
        }
    }
}

/// Where received video goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoOutput {
    /// A Y4M file (the first picture's size; later sizes are scaled to it).
    Y4m(PathBuf),
    /// Discard.
    Null,
    /// Whatever sink the factory opens (the bench's scoring sink, for one).
    Sink(SinkFactory),
}

/// Opens what `spec` names; `Ok(None)` for `none`.
pub fn open_source(spec: &VideoSpec) -> Result<Option<Box<dyn VideoSource>>, VideoError> {
    Ok(match spec {
        VideoSpec::None => None,
        VideoSpec::TestPattern { width, height, fps } => {
            Some(Box::new(pattern::TestPattern::new(*width, *height, *fps)))
        }
        VideoSpec::Y4m(path) => Some(Box::new(y4m::Y4mSource::open(path, true)?)),
        VideoSpec::Camera(device) => Some(open_camera(device.as_deref())?),
    })
}

/// Opens where received video goes.
pub fn open_sink(output: &VideoOutput) -> Result<Box<dyn VideoSink>, VideoError> {
    Ok(match output {
        VideoOutput::Y4m(path) => Box::new(y4m::Y4mSink::create(path)?),
        VideoOutput::Null => Box::new(NullSink),
        VideoOutput::Sink(factory) => factory.open("peer"),
    })
}

/// Camera capture needs the `camera` feature (v4l2), which is off by default.
#[cfg(feature = "camera")]
fn open_camera(device: Option<&str>) -> Result<Box<dyn VideoSource>, VideoError> {
    let (width, height) = DEFAULT_SIZE;
    Ok(Box::new(camera::CameraSource::open(
        device,
        width,
        height,
        DEFAULT_FPS,
    )?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(device: Option<&str>) -> Result<Box<dyn VideoSource>, VideoError> {
    Err(VideoError::NoCamera {
        detail: format!(
            ": {} (this build has no camera support; build sotto-engine with the `camera` feature)",
            device.unwrap_or("the default camera")
        ),
    })
}

/// Makes a sink for each remote participant's video (by their name): a window, a quality
/// meter, a test's frame collector.
#[derive(Clone)]
pub struct SinkFactory(pub Arc<OpenSink>);

/// What a [`SinkFactory`] calls.
pub type OpenSink = dyn Fn(&str) -> Box<dyn VideoSink> + Send + Sync;

impl SinkFactory {
    /// A sink for `participant`.
    pub fn open(&self, participant: &str) -> Box<dyn VideoSink> {
        (self.0)(participant)
    }
}

/// Two factories are the same when they are one.
impl PartialEq for SinkFactory {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SinkFactory {}

impl std::fmt::Debug for SinkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkFactory")
    }
}

/// One sink that writes to all of `sinks` (none: discards). Every sink gets every
/// picture; the first error is returned after all were tried.
pub fn tee(mut sinks: Vec<Box<dyn VideoSink>>) -> Box<dyn VideoSink> {
    match sinks.len() {
        0 => Box::new(NullSink),
        1 => sinks.remove(0),
        _ => Box::new(Tee(sinks)),
    }
}

struct Tee(Vec<Box<dyn VideoSink>>);

impl VideoSink for Tee {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        let mut result = Ok(());
        for sink in &mut self.0 {
            let written = sink.write(frame);
            if result.is_ok() {
                result = written;
            }
        }
        result
    }

    fn finish(&mut self) -> Result<(), VideoError> {
        let mut result = Ok(());
        for sink in &mut self.0 {
            let finished = sink.finish();
            if result.is_ok() {
                result = finished;
            }
        }
        result
    }
}

/// Discards pictures.
#[derive(Debug, Default)]
pub struct NullSink;

impl VideoSink for NullSink {
    fn write(&mut self, _frame: &VideoFrame) -> Result<(), VideoError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), VideoError> {
        Ok(())
    }
}

/// What can go wrong with video input, output and coding.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// A spec the command line could not parse.
    #[error(
        "cannot read video spec {0:?}: use none, test-pattern, test-pattern:WxH[@FPS], camera, camera:DEVICE or a .y4m path"
    )]
    BadSpec(String),
    /// No camera (CI machines have none).
    #[error(
        "no camera{detail}; use a file or a synthetic source instead: --video FILE.y4m or --video test-pattern"
    )]
    NoCamera {
        /// More about why, starting with ": ".
        detail: String,
    },
    /// A Y4M file could not be read or written.
    #[error("Y4M file {path}: {message}")]
    Y4m {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A picture of the wrong shape.
    #[error("invalid picture: {0}")]
    Picture(String),
    /// The codec refused.
    #[error(transparent)]
    Codec(#[from] sotto_vpx::VpxError),
    /// The H.264 codec refused.
    #[error(transparent)]
    H264(#[from] sotto_h264::H264Error),
    /// Windows were asked for where none can be shown.
    #[error(
        "cannot show video in a window: {0}; write it to a file instead: --video-output FILE.y4m"
    )]
    NoDisplay(String),
    /// A codec name the command line could not parse.
    #[error("unknown video codec {0:?}: use vp8 or h264")]
    BadCodec(String),
}
