//! How close received video is to what was sent, for senders of the test pattern: each
//! decoded picture's frame code names its source picture, which is rendered again
//! ([`super::pattern::render`]), scaled to the received size with the sender's scaler
//! (what that layer's encoder was given), and compared: PSNR and SSIM from `av-metrics`.
//!
//! Scoring costs a few milliseconds a picture (SSIM most of it), so a [`QualitySink`]
//! scores one picture in `every`, on a thread of its own.

use std::sync::{Arc, Mutex};

use av_metrics::video::{ChromaSampling, Frame, psnr, ssim};
use serde::Serialize;

use super::code::FrameCode;
use super::pattern::render;
use super::scale::Scaler;
use super::{VideoError, VideoFrame, VideoSink};

/// PSNR and SSIM of one picture against its source, luma and all planes weighted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Luma PSNR, dB.
    pub psnr_y: f64,
    /// PSNR of the three planes weighted 4:1:1, dB.
    pub psnr: f64,
    /// Luma SSIM, 0..1.
    pub ssim_y: f64,
    /// SSIM of the three planes weighted, 0..1.
    pub ssim: f64,
}

/// `got` against `reference` (same size). Only the largest part whose sides are
/// multiples of 8 is compared: av-metrics' frames pad to 8, and padding both alike
/// would count as a perfect match.
pub fn score(reference: &VideoFrame, got: &VideoFrame) -> Result<Score, VideoError> {
    if (reference.width, reference.height) != (got.width, got.height) {
        return Err(VideoError::Picture(format!(
            "comparing {}x{} with {}x{}",
            got.width, got.height, reference.width, reference.height
        )));
    }
    let (width, height) = (got.width & !7, got.height & !7);
    if width == 0 || height == 0 || !reference.is_consistent() || !got.is_consistent() {
        return Err(VideoError::Picture(format!(
            "too small to compare: {}x{}",
            got.width, got.height
        )));
    }
    let a = to_frame(reference, width, height);
    let b = to_frame(got, width, height);
    let failed = |err: Box<dyn std::error::Error>| VideoError::Picture(format!("scoring: {err}"));
    let p = psnr::calculate_frame_psnr(&a, &b, 8, ChromaSampling::Cs420).map_err(failed)?;
    let s = ssim::calculate_frame_ssim(&a, &b, 8, ChromaSampling::Cs420).map_err(failed)?;
    Ok(Score {
        psnr_y: p.y,
        psnr: p.avg,
        ssim_y: from_db(s.y),
        ssim: from_db(s.avg),
    })
}

/// av-metrics gives SSIM in decibels, 10·log10(1 / (1 − SSIM)); back to 0..1.
fn from_db(db: f64) -> f64 {
    if db.is_infinite() {
        1.0
    } else {
        1.0 - 10f64.powf(-db / 10.0)
    }
}

/// The top-left `width`x`height` of `picture` (both even, at most its size) as an
/// av-metrics frame.
fn to_frame(picture: &VideoFrame, width: u32, height: u32) -> Frame<u8> {
    let mut frame =
        Frame::new_with_padding(width as usize, height as usize, ChromaSampling::Cs420, 0);
    let planes = [
        (&picture.y, picture.width, width, height),
        (&picture.u, picture.chroma_width(), width / 2, height / 2),
        (&picture.v, picture.chroma_width(), width / 2, height / 2),
    ];
    for (plane, (data, stride, w, h)) in frame.planes.iter_mut().zip(planes) {
        let (stride, w, h) = (stride as usize, w as usize, h as usize);
        let cfg_stride = plane.cfg.stride;
        let origin = plane.data_origin_mut();
        for row in 0..h {
            let Some(src) = data.get(row * stride..row * stride + w) else {
                break;
            };
            if let Some(dst) = origin.get_mut(row * cfg_stride..row * cfg_stride + w) {
                dst.copy_from_slice(src);
            }
        }
    }
    frame
}

/// What a [`QualitySink`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QualitySummary {
    /// Pictures written to the sink.
    pub frames: u64,
    /// Pictures scored.
    pub scored: u64,
    /// Pictures whose code did not read (not scored).
    pub unreadable: u64,
    /// Pictures chosen for scoring that came while the scorer was busy (not scored).
    pub skipped: u64,
    /// Mean luma PSNR, dB.
    pub psnr_y: Option<f64>,
    /// Mean weighted PSNR, dB.
    pub psnr: Option<f64>,
    /// Lowest weighted PSNR of a scored picture, dB.
    pub psnr_min: Option<f64>,
    /// Mean luma SSIM.
    pub ssim_y: Option<f64>,
    /// Mean weighted SSIM.
    pub ssim: Option<f64>,
}

#[derive(Debug, Default)]
struct Totals {
    frames: u64,
    scored: u64,
    unreadable: u64,
    skipped: u64,
    psnr_y: f64,
    psnr: f64,
    psnr_min: Option<f64>,
    ssim_y: f64,
    ssim: f64,
}

/// The running result of a [`QualitySink`], readable while it runs and after.
#[derive(Debug, Clone, Default)]
pub struct QualityMeter(Arc<Mutex<Totals>>);

impl QualityMeter {
    /// The means so far.
    pub fn summary(&self) -> QualitySummary {
        let t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mean = |sum: f64, places: i32| {
            (t.scored > 0).then(|| {
                let scale = 10f64.powi(places);
                (sum / t.scored as f64 * scale).round() / scale
            })
        };
        QualitySummary {
            frames: t.frames,
            scored: t.scored,
            unreadable: t.unreadable,
            skipped: t.skipped,
            psnr_y: mean(t.psnr_y, 2),
            psnr: mean(t.psnr, 2),
            psnr_min: t.psnr_min.map(|p| (p * 100.0).round() / 100.0),
            ssim_y: mean(t.ssim_y, 4),
            ssim: mean(t.ssim, 4),
        }
    }
}

/// Scores received test-pattern pictures against their sources, on a thread of its own
/// so that the decode thread it is written from never waits for it: a picture that
/// comes while the scorer is still busy is skipped (counted), not queued.
pub struct QualitySink {
    every: u64,
    meter: QualityMeter,
    pictures: Option<std::sync::mpsc::SyncSender<VideoFrame>>,
    scorer: Option<std::thread::JoinHandle<()>>,
}

impl QualitySink {
    /// A sink for pictures from a `width`x`height` test pattern, scoring one picture in
    /// `every`, its results in `meter`.
    pub fn new(width: u32, height: u32, every: u64, meter: QualityMeter) -> QualitySink {
        let (pictures, queue) = std::sync::mpsc::sync_channel::<VideoFrame>(1);
        let totals = meter.clone();
        let scorer = std::thread::Builder::new()
            .name("sotto-video-score".into())
            .spawn(move || {
                let mut scaler = Scaler::default();
                while let Ok(picture) = queue.recv() {
                    totals.add(score_picture(&mut scaler, (width, height), &picture));
                }
            })
            .ok();
        QualitySink {
            every: every.max(1),
            meter,
            pictures: scorer.is_some().then_some(pictures),
            scorer,
        }
    }
}

/// What scoring one picture gave: `None` when its code did not read.
fn score_picture(
    scaler: &mut Scaler,
    source: (u32, u32),
    picture: &VideoFrame,
) -> Result<Option<Score>, VideoError> {
    let Some(code) = FrameCode::read(&picture.y, picture.width, picture.height) else {
        return Ok(None);
    };
    let original = render(
        source.0,
        source.1,
        u64::from(code.frame),
        u64::from(code.capture_ms),
    );
    let reference = scaler.scale(&original, picture.width, picture.height)?;
    score(&reference, picture).map(Some)
}

impl QualityMeter {
    /// Scores `picture` (from a `source`-sized test pattern) here and now, for pictures
    /// scored after the call (a browser's); counts it as written.
    pub fn score_now(&self, source: (u32, u32), picture: &VideoFrame) {
        self.lock().frames += 1;
        self.add(score_picture(&mut Scaler::default(), source, picture));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, scored: Result<Option<Score>, VideoError>) {
        let mut t = self.lock();
        match scored {
            Ok(Some(s)) => {
                t.scored += 1;
                t.psnr_y += s.psnr_y;
                t.psnr += s.psnr;
                t.psnr_min = Some(t.psnr_min.map_or(s.psnr, |m: f64| m.min(s.psnr)));
                t.ssim_y += s.ssim_y;
                t.ssim += s.ssim;
            }
            Ok(None) => t.unreadable += 1,
            Err(err) => {
                tracing::debug!(%err, "a picture could not be scored");
                t.unreadable += 1;
            }
        }
    }
}

impl VideoSink for QualitySink {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        let count = {
            let mut t = self.meter.lock();
            t.frames += 1;
            t.frames
        };
        if (count - 1) % self.every != 0 {
            return Ok(());
        }
        let sent = self
            .pictures
            .as_ref()
            .is_some_and(|pictures| pictures.try_send(frame.clone()).is_ok());
        if !sent {
            self.meter.lock().skipped += 1;
        }
        Ok(())
    }

    /// Waits for the pictures already handed to the scorer.
    fn finish(&mut self) -> Result<(), VideoError> {
        self.pictures = None;
        if let Some(scorer) = self.scorer.take() {
            let _ = scorer.join();
        }
        Ok(())
    }
}

impl Drop for QualitySink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_matches_itself_and_not_a_later_one() {
        let a = render(320, 180, 10, 5_000);
        let same = score(&a, &a).unwrap();
        assert!(same.psnr_y >= 100.0, "{same:?}");
        assert!((same.ssim - 1.0).abs() < 1e-9, "{same:?}");
        let b = render(320, 180, 40, 6_000);
        let other = score(&a, &b).unwrap();
        assert!(other.psnr < 25.0, "{other:?}");
        assert!(other.ssim < same.ssim);
        assert!(score(&a, &render(160, 90, 10, 5_000)).is_err());
    }

    #[test]
    fn the_sink_scores_coded_pictures_through_a_codec_like_loss() {
        let meter = QualityMeter::default();
        let mut sink = QualitySink::new(640, 360, 2, meter.clone());
        let mut scaler = Scaler::default();
        for index in 0..6u64 {
            // The received layer: the source scaled to half, a little noise on top.
            let mut got = scaler
                .scale(&render(640, 360, index, 1_000 + index * 33), 320, 180)
                .unwrap();
            for (i, px) in got.y.iter_mut().enumerate().skip(320 * 40) {
                *px = px.saturating_add((i % 3) as u8);
            }
            sink.write(&got).unwrap();
            // (Let the scorer catch up, so that nothing is skipped.)
            while meter.summary().scored < index / 2 + 1 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let mut blank = VideoFrame::black(320, 180);
        blank.y.fill(128);
        sink.write(&blank).unwrap();
        sink.finish().unwrap();
        let summary = meter.summary();
        assert_eq!(summary.skipped, 0, "{summary:?}");
        assert_eq!(
            (summary.frames, summary.scored, summary.unreadable),
            (7, 3, 1)
        );
        let psnr = summary.psnr_y.unwrap();
        assert!(psnr > 40.0 && psnr < 60.0, "{summary:?}");
        assert!(summary.ssim_y.unwrap() > 0.95, "{summary:?}");
    }
}
