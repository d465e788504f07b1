//! Keyframe requests for our video: an interceptor that watches inbound RTCP for PLI and
//! FIR naming one of our video SSRCs and raises that layer's flag, and the flags the
//! video capture thread reads (and clears) before each frame. The interceptor is a
//! [`RtcpTap`] (rtc ends inbound RTCP inside its interceptor chain); sans-IO.
//!
//! A flood of requests costs at most one keyframe per layer per [`MIN_KEYFRAME_SPACING`]:
//! the capture thread keeps the flag raised until the spacing allows the keyframe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use sotto_interceptors::rtcp_tap::{OnRtcp, RtcpTap};

/// The least time between two keyframes of one layer made on request (a keyframe costs
/// several frames' worth of bits; receivers that lost one frame ask again within a
/// round trip anyway).
pub const MIN_KEYFRAME_SPACING: Duration = Duration::from_millis(300);

/// One flag per video layer, by SSRC.
#[derive(Debug)]
pub struct KeyframeRequests {
    ssrcs: Vec<u32>,
    wanted: Vec<AtomicBool>,
    /// Requests received (PLI and FIR), for the summary.
    pub received: AtomicU64,
}

impl KeyframeRequests {
    /// Flags for the layers sent on `ssrcs` (lowest first).
    pub fn new(ssrcs: Vec<u32>) -> Self {
        let wanted = ssrcs.iter().map(|_| AtomicBool::new(false)).collect();
        KeyframeRequests {
            ssrcs,
            wanted,
            received: AtomicU64::new(0),
        }
    }

    /// Someone asked for a keyframe on `ssrc`; false when it is not one of ours.
    pub fn request(&self, ssrc: u32) -> bool {
        match self.ssrcs.iter().position(|&s| s == ssrc) {
            Some(layer) => {
                self.wanted[layer].store(true, Ordering::Relaxed);
                self.received.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Our own side wants a keyframe on `layer` (a frame it dropped, a layer that
    /// resumes); not counted as a request.
    pub fn want(&self, layer: usize) {
        if let Some(flag) = self.wanted.get(layer) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Whether layer `layer` was asked for a keyframe (the flag stays up).
    pub fn wanted(&self, layer: usize) -> bool {
        self.wanted
            .get(layer)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Lowers layer `layer`'s flag (its keyframe is being made).
    pub fn clear(&self, layer: usize) {
        if let Some(flag) = self.wanted.get(layer) {
            flag.store(false, Ordering::Relaxed);
        }
    }
}

/// Decides, per layer, whether this frame is a keyframe: asked for and far enough from
/// the layer's last one (see [`MIN_KEYFRAME_SPACING`]).
#[derive(Debug)]
pub struct KeyframePacer {
    last: Vec<Option<Instant>>,
}

impl KeyframePacer {
    /// For `layers` layers, none made yet.
    pub fn new(layers: usize) -> Self {
        KeyframePacer {
            last: vec![None; layers],
        }
    }

    /// The keyframe flags for a frame at `now`; clears the requests it grants.
    pub fn take(&mut self, requests: &KeyframeRequests, now: Instant) -> Vec<bool> {
        (0..self.last.len())
            .map(|layer| {
                let spaced = self.last[layer]
                    .is_none_or(|at| now.saturating_duration_since(at) >= MIN_KEYFRAME_SPACING);
                let grant = requests.wanted(layer) && spaced;
                if grant {
                    requests.clear(layer);
                }
                grant
            })
            .collect()
    }

    /// Layer `layer` produced a keyframe at `now` (asked for or not).
    pub fn made(&mut self, layer: usize, now: Instant) {
        if let Some(last) = self.last.get_mut(layer) {
            *last = Some(now);
        }
    }
}

/// The interceptor (see the module documentation): raises `requests`' flags.
pub fn keyframe_tap(requests: Arc<KeyframeRequests>) -> RtcpTap<impl OnRtcp> {
    RtcpTap::new(
        move |packets: &[Box<dyn rtc::rtcp::Packet>], _now: Instant| {
            for packet in packets {
                let any = packet.as_any();
                if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                    requests.request(pli.media_ssrc);
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    for entry in &fir.fir {
                        requests.request(entry.ssrc);
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_flood_makes_one_keyframe_per_spacing() {
        let requests = KeyframeRequests::new(vec![10, 12, 14]);
        let mut pacer = KeyframePacer::new(3);
        let start = Instant::now();
        assert!(!requests.request(99), "not our SSRC");
        let mut keyframes = 0;
        for ms in (0..1000).step_by(10) {
            // Every 10 ms, a PLI for the middle layer.
            requests.request(12);
            let now = start + Duration::from_millis(ms);
            let flags = pacer.take(&requests, now);
            assert!(!flags[0] && !flags[2]);
            if flags[1] {
                keyframes += 1;
                pacer.made(1, now);
            }
        }
        assert_eq!(keyframes, 4, "at 0, 300, 600 and 900 ms");
        assert_eq!(requests.received.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn a_request_waits_for_the_spacing_then_is_granted() {
        let requests = KeyframeRequests::new(vec![1]);
        let mut pacer = KeyframePacer::new(1);
        let start = Instant::now();
        pacer.made(0, start);
        requests.request(1);
        assert_eq!(
            pacer.take(&requests, start + Duration::from_millis(100)),
            vec![false]
        );
        assert_eq!(
            pacer.take(&requests, start + Duration::from_millis(300)),
            vec![true]
        );
        assert_eq!(
            pacer.take(&requests, start + Duration::from_millis(700)),
            vec![false]
        );
    }
}
