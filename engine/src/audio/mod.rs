//! Audio: the receive-side jitter buffer today; capture, playback, resampling and Opus
//! arrive with the rest of the voice-call issue.

pub mod jitter;
