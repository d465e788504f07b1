//! Remote videos in windows on a desktop, behind the `window` feature: one window per
//! remote participant, each drawn by a thread of its own (an X11 window cannot move
//! between threads, and the decode thread must never wait on a display). The sink hands
//! pictures over a one-deep channel; a window that falls behind shows the newest one.
//! Without the feature, or without a display, [`check_display`] says why and names the
//! file output instead.

use super::{VideoError, VideoFrame};

/// Whether windows can be shown here: a build with the feature and a display to draw on.
pub fn check_display() -> Result<(), VideoError> {
    if !cfg!(feature = "window") {
        return Err(VideoError::NoDisplay(
            "this build has no windows; build sotto-engine with the `window` feature".into(),
        ));
    }
    if std::env::var_os("DISPLAY").is_none() {
        return Err(VideoError::NoDisplay(
            "no X display (DISPLAY is not set)".into(),
        ));
    }
    Ok(())
}

/// Where `--video-output window` sends video: a window per participant, or why not.
pub fn window_output() -> Result<super::SinkFactory, VideoError> {
    check_display()?;
    #[cfg(feature = "window")]
    return Ok(window_sinks());
    #[cfg(not(feature = "window"))]
    unreachable!("check_display refuses builds without the feature")
}

/// I420 to the 0RGB pixels a window draws (BT.601, limited range).
pub fn to_rgb(frame: &VideoFrame, out: &mut Vec<u32>) {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let cw = frame.chroma_width() as usize;
    out.clear();
    out.reserve(w * h);
    for row in 0..h {
        for col in 0..w {
            let y = f32::from(frame.y[row * w + col]) - 16.0;
            let c = (row / 2) * cw + col / 2;
            let u = f32::from(frame.u[c]) - 128.0;
            let v = f32::from(frame.v[c]) - 128.0;
            let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u32;
            let r = clamp(1.164 * y + 1.596 * v);
            let g = clamp(1.164 * y - 0.392 * u - 0.813 * v);
            let b = clamp(1.164 * y + 2.017 * u);
            out.push((r << 16) | (g << 8) | b);
        }
    }
}

#[cfg(feature = "window")]
pub use shown::{WindowSink, window_sinks};

#[cfg(feature = "window")]
mod shown {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
    use std::thread;

    use minifb::{Window, WindowOptions};

    use super::super::{SinkFactory, VideoError, VideoFrame, VideoSink};
    use super::to_rgb;

    /// A window showing one participant's video.
    pub struct WindowSink {
        pictures: Option<SyncSender<VideoFrame>>,
        thread: Option<thread::JoinHandle<()>>,
        drawn: Arc<AtomicU64>,
    }

    impl WindowSink {
        /// Opens a window titled `title` (on its first picture).
        pub fn open(title: &str) -> WindowSink {
            let (tx, rx) = sync_channel::<VideoFrame>(1);
            let title = format!("Sotto: {title}");
            let drawn = Arc::new(AtomicU64::new(0));
            let counter = drawn.clone();
            let thread = thread::Builder::new()
                .name("sotto-window".into())
                .spawn(move || show(&title, &rx, &counter))
                .ok();
            WindowSink {
                pictures: Some(tx),
                thread,
                drawn,
            }
        }

        /// Pictures drawn so far.
        pub fn drawn(&self) -> u64 {
            self.drawn.load(Ordering::Relaxed)
        }
    }

    fn show(title: &str, pictures: &Receiver<VideoFrame>, drawn: &AtomicU64) {
        let mut window: Option<Window> = None;
        let mut pixels = Vec::new();
        while let Ok(frame) = pictures.recv() {
            let (w, h) = (frame.width as usize, frame.height as usize);
            if window.as_ref().is_none_or(|win| win.get_size() != (w, h)) {
                match Window::new(title, w, h, WindowOptions::default()) {
                    Ok(opened) => window = Some(opened),
                    Err(err) => {
                        tracing::warn!(%err, "no window for the video; not shown");
                        return;
                    }
                }
            }
            let Some(win) = window.as_mut() else { return };
            if !win.is_open() {
                // Closed by the user: the call goes on without it.
                return;
            }
            to_rgb(&frame, &mut pixels);
            if let Err(err) = win.update_with_buffer(&pixels, w, h) {
                tracing::warn!(%err, "the video window failed; not shown");
                return;
            }
            drawn.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl VideoSink for WindowSink {
        fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
            if let Some(tx) = &self.pictures {
                match tx.try_send(frame.clone()) {
                    // Full: the window is behind and shows the picture it has.
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => self.pictures = None,
                }
            }
            Ok(())
        }

        fn finish(&mut self) -> Result<(), VideoError> {
            self.pictures = None;
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
            Ok(())
        }
    }

    /// A window for each remote participant.
    pub fn window_sinks() -> SinkFactory {
        SinkFactory(Arc::new(|participant: &str| {
            Box::new(WindowSink::open(participant)) as Box<dyn VideoSink>
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_stays_grey_and_primaries_come_out() {
        let mut frame = VideoFrame::black(4, 2);
        frame.y.fill(126);
        let mut rgb = Vec::new();
        to_rgb(&frame, &mut rgb);
        assert_eq!(rgb.len(), 8);
        let grey = rgb[0];
        let (r, g, b) = (grey >> 16, (grey >> 8) & 0xff, grey & 0xff);
        assert!(r == g && g == b && (125..=130).contains(&r), "{grey:06x}");
        // Red in BT.601: Y 81, U 90, V 240.
        frame.y.fill(81);
        frame.u.fill(90);
        frame.v.fill(240);
        to_rgb(&frame, &mut rgb);
        assert!(
            rgb[0] >> 16 > 240 && (rgb[0] >> 8) & 0xff < 10,
            "{:06x}",
            rgb[0]
        );
    }

    #[test]
    fn no_display_is_a_clear_error() {
        if std::env::var_os("DISPLAY").is_none() || !cfg!(feature = "window") {
            let err = check_display().expect_err("no windows here");
            assert!(err.to_string().contains("--video-output FILE.y4m"), "{err}");
        }
    }
}

#[cfg(all(test, feature = "window"))]
mod shown_tests {
    use super::super::VideoSink as _;
    use super::super::pattern::render;
    use super::*;

    /// Run under a display (`xvfb-run cargo test -p sotto-engine --features window`):
    /// every picture written while the window keeps up is drawn.
    #[test]
    fn pictures_reach_the_window() {
        if check_display().is_err() {
            eprintln!("skipped: no display");
            return;
        }
        let mut sink = WindowSink::open("test");
        for index in 0..20 {
            sink.write(&render(320, 180, index, index * 33))
                .expect("written");
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        sink.finish().expect("finished");
        assert!(sink.drawn() >= 15, "{} of 20 drawn", sink.drawn());
    }
}
