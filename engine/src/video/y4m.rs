//! Y4M (YUV4MPEG2) files in and out, through the `y4m` crate: 8-bit 4:2:0 only (what
//! browsers' fake cameras and ffmpeg write for video calls). A source plays once or in a
//! loop; a sink writes every picture at the size of the first (later sizes are scaled to
//! it, as a screen recording would show them).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use super::scale::Scaler;
use super::{FrameTime, VideoError, VideoFrame, VideoSink, VideoSource, plane_sizes};

/// The largest picture a file may declare (the header is checked before the `y4m` crate
/// allocates a frame buffer from it).
const MAX_DIMENSION: usize = 8192;
/// The header line's longest allowed length.
const MAX_HEADER: usize = 1024;

/// Pictures from a Y4M file.
pub struct Y4mSource {
    path: PathBuf,
    decoder: y4m::Decoder<Box<dyn Read + Send>>,
    width: u32,
    height: u32,
    fps: u32,
    looping: bool,
    /// Frames read since the file was (re)opened: a loop over an empty file must stop.
    read_since_open: u64,
}

impl std::fmt::Debug for Y4mSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mSource")
            .field("path", &self.path)
            .field("size", &(self.width, self.height))
            .finish_non_exhaustive()
    }
}

fn y4m_error(path: &Path, message: impl std::fmt::Display) -> VideoError {
    VideoError::Y4m {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Opens `path` and checks its header: Y4M, 4:2:0 at 8 bits, a sane size. Returns the
/// decoder and the frame rate.
fn open_decoder(path: &Path) -> Result<(y4m::Decoder<Box<dyn Read + Send>>, u32), VideoError> {
    let file = File::open(path).map_err(|e| y4m_error(path, e))?;
    let mut reader = BufReader::new(file);
    let mut header = Vec::new();
    (&mut reader)
        .take(MAX_HEADER as u64)
        .read_until(b'\n', &mut header)
        .map_err(|e| y4m_error(path, e))?;
    if !header.starts_with(b"YUV4MPEG2 ") || !header.ends_with(b"\n") {
        return Err(y4m_error(path, "not a Y4M file (no YUV4MPEG2 header line)"));
    }
    for field in header.split(|&b| b == b' ' || b == b'\n') {
        let (Some(&tag), value) = (field.first(), field.get(1..).unwrap_or_default()) else {
            continue;
        };
        if tag == b'W' || tag == b'H' {
            let size = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&v| (1..=MAX_DIMENSION).contains(&v));
            if size.is_none() {
                return Err(y4m_error(
                    path,
                    format!(
                        "a picture size field {:?} out of 1..={MAX_DIMENSION}",
                        String::from_utf8_lossy(field)
                    ),
                ));
            }
        }
    }
    // Hand the decoder the header we consumed, then the rest of the file.
    let stream: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(header).chain(reader));
    let decoder = y4m::Decoder::new(stream).map_err(|e| y4m_error(path, format!("{e:?}")))?;
    match decoder.get_colorspace() {
        y4m::Colorspace::C420
        | y4m::Colorspace::C420jpeg
        | y4m::Colorspace::C420paldv
        | y4m::Colorspace::C420mpeg2 => {}
        other => {
            return Err(y4m_error(
                path,
                format!("colour space {other:?}: only 8-bit 4:2:0 is supported"),
            ));
        }
    }
    let rate = decoder.get_framerate();
    let fps = if rate.den == 0 {
        0
    } else {
        ((rate.num as f64 / rate.den as f64).round() as u32).clamp(1, 120)
    };
    Ok((decoder, fps.max(1)))
}

impl Y4mSource {
    /// Opens `path`; with `looping`, it starts over at the end.
    pub fn open(path: &Path, looping: bool) -> Result<Y4mSource, VideoError> {
        let (decoder, fps) = open_decoder(path)?;
        Ok(Y4mSource {
            path: path.to_owned(),
            width: decoder.get_width() as u32,
            height: decoder.get_height() as u32,
            fps,
            decoder,
            looping,
            read_since_open: 0,
        })
    }

    fn next(&mut self) -> Result<Option<VideoFrame>, VideoError> {
        let (width, height) = (self.width, self.height);
        match self.decoder.read_frame() {
            Ok(frame) => {
                let (luma, chroma) = plane_sizes(width, height);
                let (y, u, v) = (
                    frame.get_y_plane(),
                    frame.get_u_plane(),
                    frame.get_v_plane(),
                );
                if y.len() != luma || u.len() != chroma || v.len() != chroma {
                    return Err(y4m_error(&self.path, "a frame of the wrong size"));
                }
                self.read_since_open += 1;
                Ok(Some(VideoFrame {
                    width,
                    height,
                    y: y.to_vec(),
                    u: u.to_vec(),
                    v: v.to_vec(),
                }))
            }
            // A truncated last frame ends the file like EOF does.
            Err(y4m::Error::EOF) => Ok(None),
            Err(y4m::Error::IoError(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                Ok(None)
            }
            Err(err) => Err(y4m_error(&self.path, format!("{err:?}"))),
        }
    }
}

impl VideoSource for Y4mSource {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn fps(&self) -> u32 {
        self.fps
    }

    fn read(&mut self, _at: FrameTime) -> Result<Option<VideoFrame>, VideoError> {
        if let Some(frame) = self.next()? {
            return Ok(Some(frame));
        }
        if !self.looping || self.read_since_open == 0 {
            return Ok(None);
        }
        let (decoder, _) = open_decoder(&self.path)?;
        if (decoder.get_width() as u32, decoder.get_height() as u32) != (self.width, self.height) {
            return Err(y4m_error(&self.path, "the file changed size while looping"));
        }
        self.decoder = decoder;
        self.read_since_open = 0;
        self.next()
    }

    fn is_realtime(&self) -> bool {
        false
    }
}

/// Writes pictures to a Y4M file at the first picture's size, 30 fps in the header.
pub struct Y4mSink {
    path: PathBuf,
    encoder: Option<y4m::Encoder<BufWriter<File>>>,
    file: Option<BufWriter<File>>,
    size: Option<(u32, u32)>,
    scaler: Scaler,
    fps: u32,
}

impl std::fmt::Debug for Y4mSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Y4mSink {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Y4mSink, VideoError> {
        let file = File::create(path).map_err(|e| y4m_error(path, e))?;
        Ok(Y4mSink {
            path: path.to_owned(),
            encoder: None,
            file: Some(BufWriter::new(file)),
            size: None,
            scaler: Scaler::default(),
            fps: super::DEFAULT_FPS,
        })
    }
}

impl VideoSink for Y4mSink {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        if !frame.is_consistent() {
            return Err(VideoError::Picture(format!(
                "{frame:?} with wrong plane sizes"
            )));
        }
        let (width, height) = *self.size.get_or_insert((frame.width, frame.height));
        if self.encoder.is_none() {
            let Some(file) = self.file.take() else {
                return Err(y4m_error(&self.path, "already finished"));
            };
            let encoder = y4m::encode(
                width as usize,
                height as usize,
                y4m::Ratio::new(self.fps as usize, 1),
            )
            .with_colorspace(y4m::Colorspace::C420jpeg)
            .write_header(file)
            .map_err(|e| y4m_error(&self.path, format!("{e:?}")))?;
            self.encoder = Some(encoder);
        }
        let scaled;
        let frame = if (frame.width, frame.height) == (width, height) {
            frame
        } else {
            scaled = self.scaler.scale(frame, width, height)?;
            &scaled
        };
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(());
        };
        encoder
            .write_frame(&y4m::Frame::new([&frame.y, &frame.u, &frame.v], None))
            .map_err(|e| y4m_error(&self.path, format!("{e:?}")))
    }

    fn finish(&mut self) -> Result<(), VideoError> {
        use std::io::Write;
        if let Some(mut file) = self.file.take() {
            // Nothing was written: leave an empty file rather than a header without a size.
            file.flush().map_err(|e| y4m_error(&self.path, e))?;
        }
        if let Some(encoder) = self.encoder.take() {
            drop(encoder); // BufWriter flushes on drop; errors were reported per frame.
        }
        Ok(())
    }
}

impl Drop for Y4mSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::code::FrameCode;
    use crate::video::pattern::render;

    fn at(index: u64) -> FrameTime {
        FrameTime { index, wall_ms: 0 }
    }

    #[test]
    fn a_written_file_reads_back_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.y4m");
        let mut sink = Y4mSink::create(&path).unwrap();
        for i in 0..3 {
            sink.write(&render(160, 90, i, 0)).unwrap();
        }
        // A later picture of another size is scaled to the first's.
        sink.write(&render(320, 180, 3, 0)).unwrap();
        sink.finish().unwrap();

        let mut once = Y4mSource::open(&path, false).unwrap();
        assert_eq!(once.size(), (160, 90));
        assert_eq!(once.fps(), 30);
        let mut frames = Vec::new();
        while let Some(frame) = once.read(at(0)).unwrap() {
            frames.push(FrameCode::read(&frame.y, 160, 90).map(|c| c.frame));
        }
        assert_eq!(frames, vec![Some(0), Some(1), Some(2), Some(3)]);

        let mut looping = Y4mSource::open(&path, true).unwrap();
        let codes: Vec<u32> = (0..9)
            .map(|i| {
                let frame = looping.read(at(i)).unwrap().unwrap();
                FrameCode::read(&frame.y, 160, 90).unwrap().frame
            })
            .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 0, 1, 2, 3, 0]);
    }

    #[test]
    fn bad_files_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let cases = [
            ("text.y4m", b"hello world\n".to_vec(), "not a Y4M"),
            (
                "huge.y4m",
                b"YUV4MPEG2 W99999999999999 H10 F30:1\n".to_vec(),
                "size",
            ),
            ("zero.y4m", b"YUV4MPEG2 W0 H10 F30:1\n".to_vec(), "size"),
            (
                "c444.y4m",
                b"YUV4MPEG2 W16 H16 F30:1 C444\nFRAME\n".to_vec(),
                "4:2:0",
            ),
            ("noline.y4m", b"YUV4MPEG2 W16 H16".to_vec(), "not a Y4M"),
        ];
        for (name, bytes, expect) in cases {
            let err = Y4mSource::open(&write(name, &bytes), true).unwrap_err();
            assert!(err.to_string().contains(expect), "{name}: {err}");
        }
        // A truncated frame ends the file; a bad frame marker is an error.
        let truncated = write("short.y4m", b"YUV4MPEG2 W16 H16 F30:1\nFRAME\n\x10\x10");
        let mut source = Y4mSource::open(&truncated, true).unwrap();
        assert!(source.read(at(0)).unwrap().is_none());
        let mut bytes = b"YUV4MPEG2 W16 H16 F30:1\nFRAMX\n".to_vec();
        bytes.extend(vec![0u8; 16 * 16 * 3 / 2]);
        let mut source = Y4mSource::open(&write("marker.y4m", &bytes), false).unwrap();
        assert!(source.read(at(0)).is_err());
        assert!(Y4mSource::open(&dir.path().join("missing.y4m"), true).is_err());
    }
}
