//! Audio level as RFC 6464 carries it in an RTP header extension: the RMS of a frame in
//! −dBov, 0 (loudest) to 127 (silence), plus the one-byte wire form with its voice
//! activity flag.
//!
//! This module only measures and packs; the sender decides when to attach the extension,
//! and the SFU (active speaker) and the jitter buffer (which frames are quiet enough to
//! drop) read it.

/// The level of digital silence, and the lowest RFC 6464 can express (−127 dBov).
pub const SILENCE_LEVEL: u8 = 127;

/// Frames at this level or quieter (−60 dBov RMS or below: about 33 in 16-bit samples) are
/// "quiet": dropping one to catch up is inaudible. Speech sits around 20–40 and a quiet
/// room's background noise through a typical microphone near 50–70, so this marks pauses
/// and silence, never a soft syllable. It sets the jitter buffer's `Packet::quiet`.
pub const QUIET_LEVEL: u8 = 60;

/// The RFC 6464 audio level of `frame`: its RMS relative to the overload point (a
/// full-scale square wave, 0 dBov), as −dBov rounded to the nearest integer and clamped
/// to 0..=127. An empty or all-zero frame is 127. A full-scale sine is 3.
pub fn audio_level_dbov(frame: &[i16]) -> u8 {
    if frame.is_empty() {
        return SILENCE_LEVEL;
    }
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let mean_square = energy / frame.len() as f64;
    if mean_square <= 0.0 {
        return SILENCE_LEVEL;
    }
    let full_scale = 32_768.0_f64;
    let dbov = 10.0 * (mean_square / (full_scale * full_scale)).log10();
    // Finite and at most a hair above 0 for any non-silent i16 frame.
    (-dbov).round().clamp(0.0, f64::from(SILENCE_LEVEL)) as u8
}

/// True when a frame at `level` counts as quiet (see [`QUIET_LEVEL`]).
pub fn is_quiet(level: u8) -> bool {
    level >= QUIET_LEVEL
}

/// The one-byte RFC 6464 extension element: the voice activity flag in the top bit, the
/// level (clamped to 127) in the low seven.
pub fn to_extension_byte(level: u8, voice: bool) -> u8 {
    (u8::from(voice) << 7) | level.min(SILENCE_LEVEL)
}

/// Reads the one-byte RFC 6464 extension element: (level, voice activity).
pub fn from_extension_byte(byte: u8) -> (u8, bool) {
    (byte & 0x7f, byte & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 48_000.0;
                (amplitude * phase.sin()).round() as i16
            })
            .collect()
    }

    #[test]
    fn silence_is_127() {
        assert_eq!(audio_level_dbov(&[]), 127);
        assert_eq!(audio_level_dbov(&[0; 960]), 127);
        // One LSB of RMS is −90.3 dBov.
        assert_eq!(audio_level_dbov(&[1; 960]), 90);
    }

    #[test]
    fn full_scale_square_is_0_and_sine_is_3() {
        let square: Vec<i16> = (0..960)
            .map(|n| if n % 48 < 24 { i16::MAX } else { i16::MIN })
            .collect();
        assert_eq!(audio_level_dbov(&square), 0);
        assert_eq!(audio_level_dbov(&sine(32_767.0, 960)), 3);
    }

    #[test]
    fn level_falls_one_step_per_db() {
        // −20 dB of amplitude is 20 more −dBov.
        assert_eq!(audio_level_dbov(&sine(3_277.0, 960)), 23);
        assert_eq!(audio_level_dbov(&sine(327.7, 960)), 43);
        assert_eq!(audio_level_dbov(&sine(32.77, 960)), 63);
    }

    #[test]
    fn quiet_threshold() {
        assert!(is_quiet(audio_level_dbov(&[0; 960])));
        assert!(is_quiet(audio_level_dbov(&sine(32.77, 960))));
        assert!(!is_quiet(audio_level_dbov(&sine(327.7, 960))));
        assert!(is_quiet(QUIET_LEVEL));
        assert!(!is_quiet(QUIET_LEVEL - 1));
    }

    #[test]
    fn extension_byte_round_trips() {
        assert_eq!(to_extension_byte(23, true), 0x80 | 23);
        assert_eq!(to_extension_byte(200, false), 127);
        for level in 0..=127 {
            for voice in [false, true] {
                assert_eq!(
                    from_extension_byte(to_extension_byte(level, voice)),
                    (level, voice)
                );
            }
        }
    }
}
