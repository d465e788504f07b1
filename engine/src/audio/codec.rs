//! Opus encoding and decoding (libopus 1.6 through `opusic-c`): the engine's one codec for
//! voice, 48 kHz mono `i16`, application VoIP, VBR, in-band FEC and DTX, and libopus's
//! neural tools: deep PLC and OSCE in the decoder (by its complexity), DRED (deep
//! redundancy) in the encoder when asked for.
//!
//! This module owns the codec settings and turns every libopus failure into
//! [`AudioError::Codec`]; it never panics on a payload from the network. It does not
//! decide *what* to decode (the jitter buffer does: play, FEC or conceal) nor *which*
//! bitrate to use (the rate controller does); it only applies them.
//!
//! Privacy note: variable-bitrate packet sizes and DTX gaps reveal something about the
//! speech (pauses, and to a degree its content) to anyone who sees the SRTP packets.
//! We keep libopus's constrained VBR, which narrows the size spread; padding to a fixed
//! size is a later option.

use std::fmt;
use std::str::FromStr;

use opusic_c::dred::Dred;
use opusic_c::repacketizer::Repacketizer;
use opusic_c::{Application, Bitrate, Channels, ErrorCode, InbandFec, SampleRate};

use super::level::audio_level_dbov;
use super::{AudioError, SAMPLES_PER_MS};

/// Lowest bitrate [`OpusEncoder::set_bitrate`] applies: wideband speech in 60 ms frames on
/// a narrow link (the rate controller's [`NARROW_MIN_BPS`](super::rate::NARROW_MIN_BPS)).
/// Calls otherwise stay at 16 kbit/s or more, where in-band FEC (LBRR) still has bits.
pub const MIN_BITRATE_BPS: u32 = 12_000;

/// Highest bitrate [`OpusEncoder::set_bitrate`] applies: mono speech gains nothing
/// audible above it.
pub const MAX_BITRATE_BPS: u32 = 64_000;

/// Largest payload the encoder writes and the decoder accepts, in bytes (libopus's own
/// recommendation for the encoder's output buffer; no real packet comes close).
pub const MAX_PAYLOAD_BYTES: usize = 4000;

/// Payloads of this many bytes or fewer are DTX frames: libopus says they need not be
/// sent (a TOC byte and at most one more).
pub const DTX_MAX_BYTES: usize = 2;

/// The most audio one Opus packet can carry: 120 ms at 48 kHz.
pub const MAX_FRAME_SAMPLES: usize = 120 * SAMPLES_PER_MS;

/// Concealment and FEC work in steps of 2.5 ms: 120 samples at 48 kHz.
const PLC_STEP_SAMPLES: usize = 5 * SAMPLES_PER_MS / 2;

/// The decoder's default complexity: 5 and above conceal with libopus's deep PLC (a neural
/// model continues the speech) instead of the classic pitch repetition, and DRED needs it.
/// 6 and 7 add OSCE's LACE and NoLACE enhancers to SILK frames. 7 (NoLACE): measured, it
/// scored PESQ-WB 0.07 higher on a clean call and 0.14 to 0.23 higher under loss than 5,
/// for 0.7 % of a core per stream against 0.2 % (BENCHMARKS.md, "OSCE").
pub const DEFAULT_DECODER_COMPLEXITY: u8 = 7;

/// Input at this RFC 6464 level or quieter (−50 dBov RMS) is a pause for the encoder's
/// complexity (see `OpusEncoder::follow_pauses`): speech sits around 20–40, a quiet room
/// through a microphone around 50–70.
pub const PAUSE_LEVEL: u8 = 50;

/// How long a pause lasts before the encoder lowers its complexity, ms: longer than the
/// pauses between a speaker's sentences.
pub const PAUSE_AFTER_MS: u32 = 2000;

/// The encoder's complexity in pauses.
pub const PAUSE_COMPLEXITY: u8 = 0;

/// In digital silence (every sample zero: a muted or absent microphone, a silent file),
/// once libopus has gone to DTX the frames are not encoded at all, and one frame every
/// this many ms is, as the refresh libopus sends in DTX (its own interval is 400 ms): the
/// peer keeps receiving now and then, as with DTX, at a 20th of the encoding.
pub const SILENCE_REFRESH_MS: u32 = 400;

/// The decoder complexity from which libopus conceals with its neural PLC.
pub const DEEP_PLC_COMPLEXITY: u8 = 5;

/// The most redundancy DRED may carry, in 10 ms units: 1.04 s (libopus's limit).
pub const MAX_DRED_UNITS: u8 = 104;

/// The DRED a call carries when it is turned on, in 10 ms units: 120 ms, the longest run
/// of lost frames one decoder call rebuilds (see [`OpusDecoder::decode_dred`]). libopus
/// spends nothing on it until the encoder's expected loss is above zero, and then a lot:
/// over half of the bitrate above 12 kbit/s from 5 % loss on, taken from the primary
/// frame. Calls leave it off by default (see BENCHMARKS.md).
pub const CALL_DRED_UNITS: u8 = 12;

/// How much audio one packet carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FrameDuration {
    /// 10 ms: lowest latency, most packet overhead.
    Ms10,
    /// 20 ms: the usual choice for calls.
    #[default]
    Ms20,
    /// 40 ms.
    Ms40,
    /// 60 ms: least overhead, for bad or narrow links.
    Ms60,
}

impl FrameDuration {
    /// Every duration, shortest first.
    pub const ALL: [FrameDuration; 4] = [
        FrameDuration::Ms10,
        FrameDuration::Ms20,
        FrameDuration::Ms40,
        FrameDuration::Ms60,
    ];

    /// The duration in milliseconds.
    pub fn millis(self) -> u32 {
        match self {
            FrameDuration::Ms10 => 10,
            FrameDuration::Ms20 => 20,
            FrameDuration::Ms40 => 40,
            FrameDuration::Ms60 => 60,
        }
    }

    /// The duration of `millis` milliseconds, if Opus frames come in it.
    pub fn from_millis(millis: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|frame| frame.millis() == millis)
    }

    /// Samples in one frame at 48 kHz.
    pub fn samples(self) -> usize {
        self.millis() as usize * SAMPLES_PER_MS
    }

    /// The duration as a [`std::time::Duration`].
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.millis()))
    }
}

impl fmt::Display for FrameDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.millis())
    }
}

/// Accepts `10`, `20`, `40` or `60`, with or without a trailing `ms`.
impl FromStr for FrameDuration {
    type Err = AudioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = s.trim();
        let number = number.strip_suffix("ms").unwrap_or(number).trim_end();
        match number {
            "10" => Ok(FrameDuration::Ms10),
            "20" => Ok(FrameDuration::Ms20),
            "40" => Ok(FrameDuration::Ms40),
            "60" => Ok(FrameDuration::Ms60),
            _ => Err(AudioError::Codec(format!(
                "unsupported frame duration {s:?}: use 10, 20, 40 or 60 ms"
            ))),
        }
    }
}

/// How the encoder is set up. Always VBR, application VoIP, mono, 48 kHz.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Target bitrate in bit/s, clamped to [`MIN_BITRATE_BPS`]..=[`MAX_BITRATE_BPS`].
    pub bitrate_bps: u32,
    /// Audio per packet.
    pub frame: FrameDuration,
    /// In-band forward error correction (LBRR): each packet also carries a coarse copy of
    /// the previous frame. It costs bits only when `loss_percent` is above zero.
    pub fec: bool,
    /// Discontinuous transmission: in silence the encoder emits tiny frames the caller
    /// does not send (see [`Encoded::dtx`]).
    pub dtx: bool,
    /// Expected packet loss in percent (0..=100, clamped); libopus spends more on FEC the
    /// higher it is.
    pub loss_percent: u8,
    /// Encoder effort, 0..=10 (clamped). 9 is what WebRTC uses on desktops: nearly the
    /// quality of 10 for less CPU.
    pub complexity: u8,
    /// DRED: how much past speech every packet also carries as a neural-coded summary,
    /// in 10 ms units (0 = off, at most [`MAX_DRED_UNITS`]). libopus spends bits on it
    /// from `loss_percent` upwards, so with no expected loss it costs nothing.
    pub dred_units: u8,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            bitrate_bps: 32_000,
            frame: FrameDuration::default(),
            fec: true,
            dtx: true,
            loss_percent: 0,
            complexity: 9,
            dred_units: 0,
        }
    }
}

/// One encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The Opus packet.
    pub payload: Vec<u8>,
    /// True when DTX is on and this is a no-transmit frame (at most [`DTX_MAX_BYTES`]):
    /// the caller does not send it (the RTP timestamp still advances). With DTX off this
    /// is always false and every frame is sent.
    pub dtx: bool,
}

/// True when `payload` is so small it can only be a DTX frame: nothing to decode but
/// comfort noise, so the jitter buffer may treat it as quiet.
pub fn is_dtx_payload(payload: &[u8]) -> bool {
    payload.len() <= DTX_MAX_BYTES
}

/// `payload` without its padding and extensions (DRED rides in them), when it has any:
/// what a redundant copy of the frame needs. `None` when there is nothing to strip or the
/// packet does not parse.
pub fn without_extensions(payload: &[u8]) -> Option<Vec<u8>> {
    let mut copy = payload.to_vec();
    let len = opusic_c::repacketizer::unpad_packet(&mut copy).ok()?;
    (len < payload.len()).then(|| {
        copy.truncate(len);
        copy
    })
}

/// Samples (at 48 kHz) that `payload` decodes to, from its TOC and frame count alone.
pub fn packet_samples(payload: &[u8]) -> Result<usize, AudioError> {
    check_payload(payload)?;
    let samples = opusic_c::utils::get_nb_samples(payload, SampleRate::Hz48000)
        .map_err(|e| codec_error("packet", e))?;
    if samples == 0 || samples > MAX_FRAME_SAMPLES {
        return Err(AudioError::Codec(format!(
            "packet declares {samples} samples"
        )));
    }
    Ok(samples)
}

/// The Opus encoder.
pub struct OpusEncoder {
    inner: opusic_c::Encoder,
    config: EncoderConfig,
    /// How long the input has been in a pause, ms (see [`PAUSE_LEVEL`]).
    pause_ms: u32,
    /// The complexity libopus runs at now: the configured one, or
    /// [`PAUSE_COMPLEXITY`] in a pause.
    running_complexity: u8,
    /// Digital silence that libopus already answered with DTX: ms since the last frame it
    /// was given (see [`SILENCE_REFRESH_MS`]); `None` otherwise.
    silence_ms: Option<u32>,
    /// Frames of digital silence not given to libopus.
    skipped: u64,
    /// Output buffer, reused for every frame.
    scratch: Vec<u8>,
    /// The frame as opusic-c takes it (`u16` holding the `i16` bits), reused.
    pcm: Vec<u16>,
}

impl fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// An encoder with these settings (out-of-range numbers are clamped; `config()` shows
    /// what was applied).
    pub fn new(config: &EncoderConfig) -> Result<Self, AudioError> {
        let inner = opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip)
            .map_err(|e| codec_error("creating the encoder", e))?;
        let mut encoder = OpusEncoder {
            inner,
            config: config.clone(),
            pause_ms: 0,
            running_complexity: config.complexity.min(10),
            silence_ms: None,
            skipped: 0,
            scratch: vec![0; MAX_PAYLOAD_BYTES],
            pcm: Vec::with_capacity(MAX_FRAME_SAMPLES),
        };
        encoder.config.complexity = config.complexity.min(10);
        encoder
            .inner
            .set_complexity(encoder.config.complexity)
            .map_err(|e| codec_error("setting the complexity", e))?;
        encoder
            .inner
            .set_vbr(true)
            .map_err(|e| codec_error("enabling VBR", e))?;
        encoder
            .inner
            .set_vbr_constraint(true)
            .map_err(|e| codec_error("constraining VBR", e))?;
        encoder.set_fec(config.fec)?;
        encoder.set_dtx(config.dtx)?;
        encoder.set_bitrate(config.bitrate_bps)?;
        encoder.set_loss_percent(config.loss_percent)?;
        encoder.set_dred_units(config.dred_units)?;
        Ok(encoder)
    }

    /// Encodes one frame of exactly [`frame_samples`](Self::frame_samples) samples.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Encoded, AudioError> {
        let expected = self.frame_samples();
        if pcm.len() != expected {
            return Err(AudioError::Codec(format!(
                "encoder expects {expected} samples ({}), got {}",
                self.config.frame,
                pcm.len()
            )));
        }
        self.follow_pauses(pcm)?;
        let zeros = pcm.iter().all(|&s| s == 0);
        if !zeros {
            self.silence_ms = None;
        } else if let Some(silent) = self.silence_ms.as_mut() {
            *silent += self.config.frame.millis();
            if *silent < SILENCE_REFRESH_MS {
                self.skipped += 1;
                return Ok(Encoded {
                    payload: Vec::new(),
                    dtx: true,
                });
            }
            // The refresh: DTX is off for this frame, so libopus codes it in full (it
            // has seen only every 20th frame and would not send one of its own).
            *silent = 0;
            self.set_dtx(false)?;
            let refresh = self.encode_frame(pcm);
            self.set_dtx(true)?;
            let payload = refresh?;
            return Ok(Encoded {
                dtx: payload.len() <= DTX_MAX_BYTES,
                payload,
            });
        }
        let payload = self.encode_frame(pcm)?;
        let dtx = self.config.dtx && payload.len() <= DTX_MAX_BYTES;
        if dtx && zeros {
            self.silence_ms = Some(0);
        }
        Ok(Encoded { payload, dtx })
    }

    /// Frames of digital silence that were not encoded (see [`SILENCE_REFRESH_MS`]).
    pub fn skipped_frames(&self) -> u64 {
        self.skipped
    }

    fn encode_frame(&mut self, pcm: &[i16]) -> Result<Vec<u8>, AudioError> {
        self.pcm.clear();
        self.pcm.extend(pcm.iter().map(|s| s.cast_unsigned()));
        let len = self
            .inner
            .encode_to_slice(&self.pcm, &mut self.scratch)
            .map_err(|e| codec_error("encoding", e))?;
        Ok(self.scratch.get(..len).unwrap_or_default().to_vec())
    }

    fn set_dtx(&mut self, on: bool) -> Result<(), AudioError> {
        self.inner
            .set_dtx(on)
            .map_err(|e| codec_error("setting DTX", e))
    }

    /// Long pauses are encoded at [`PAUSE_COMPLEXITY`]: once the input has been at
    /// [`PAUSE_LEVEL`] or quieter for [`PAUSE_AFTER_MS`] (the other side is talking, or
    /// the microphone is muted), until the first louder frame, which is coded at the
    /// configured complexity. The encoder was most of a call's CPU, and at complexity 9
    /// it spent as much on a silent microphone as on speech (165 against 169 µs a 20 ms
    /// frame; 83 at 0). Not in the short pauses of someone talking: the speech after a
    /// pause coded at 0 came out worse (PESQ-WB 4.14 to 4.04 on the bench's clean call
    /// with 100 ms; see BENCHMARKS.md).
    fn follow_pauses(&mut self, pcm: &[i16]) -> Result<(), AudioError> {
        if audio_level_dbov(pcm) >= PAUSE_LEVEL {
            self.pause_ms = self.pause_ms.saturating_add(self.config.frame.millis());
        } else {
            self.pause_ms = 0;
        }
        let wanted = if self.pause_ms > PAUSE_AFTER_MS {
            PAUSE_COMPLEXITY
        } else {
            self.config.complexity
        };
        if wanted != self.running_complexity {
            self.inner
                .set_complexity(wanted)
                .map_err(|e| codec_error("setting the complexity", e))?;
            self.running_complexity = wanted;
        }
        Ok(())
    }

    /// The complexity the last frame was encoded at.
    pub fn running_complexity(&self) -> u8 {
        self.running_complexity
    }

    /// Sets the target bitrate, clamped to [`MIN_BITRATE_BPS`]..=[`MAX_BITRATE_BPS`];
    /// returns the bitrate applied. Takes effect from the next frame.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<u32, AudioError> {
        let bps = bps.clamp(MIN_BITRATE_BPS, MAX_BITRATE_BPS);
        self.inner
            .set_bitrate(Bitrate::Value(bps))
            .map_err(|e| codec_error("setting the bitrate", e))?;
        self.config.bitrate_bps = bps;
        Ok(bps)
    }

    /// Sets the expected packet loss in percent (clamped to 100), which tunes how many
    /// bits the in-band FEC gets. Takes effect from the next frame.
    pub fn set_loss_percent(&mut self, percent: u8) -> Result<(), AudioError> {
        let percent = percent.min(100);
        self.inner
            .set_packet_loss(percent)
            .map_err(|e| codec_error("setting the packet loss", e))?;
        self.config.loss_percent = percent;
        Ok(())
    }

    /// Sets how much past speech DRED carries, in 10 ms units (0 = off; clamped to
    /// [`MAX_DRED_UNITS`]). Takes effect from the next frame.
    pub fn set_dred_units(&mut self, units: u8) -> Result<(), AudioError> {
        let units = units.min(MAX_DRED_UNITS);
        self.inner
            .set_dred_duration(units)
            .map_err(|e| codec_error("setting the DRED duration", e))?;
        self.config.dred_units = units;
        Ok(())
    }

    /// Turns in-band FEC (LBRR) on or off from the next frame.
    pub fn set_fec(&mut self, on: bool) -> Result<(), AudioError> {
        self.inner
            .set_inband_fec(if on { InbandFec::Mode1 } else { InbandFec::Off })
            .map_err(|e| codec_error("setting in-band FEC", e))?;
        self.config.fec = on;
        Ok(())
    }

    /// Changes the frame duration: `encode` expects the new size from the next call.
    pub fn set_frame(&mut self, frame: FrameDuration) {
        self.config.frame = frame;
    }

    /// Samples per frame that [`encode`](Self::encode) expects.
    pub fn frame_samples(&self) -> usize {
        self.config.frame.samples()
    }

    /// The settings in force (bitrate and loss as last applied).
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The codec's algorithmic delay in samples: decoded audio lags the input by this.
    pub fn lookahead(&mut self) -> Result<usize, AudioError> {
        let samples = self
            .inner
            .get_look_ahead()
            .map_err(|e| codec_error("reading the lookahead", e))?;
        usize::try_from(samples)
            .map_err(|_| AudioError::Codec(format!("lookahead {samples} out of range")))
    }
}

/// The Opus decoder: normal decoding, recovery from in-band FEC or DRED, and loss
/// concealment (deep PLC from complexity 5).
pub struct OpusDecoder {
    /// opusic-c's DRED wrapper owns the plain decoder: DRED decoding needs both states.
    inner: Dred,
    /// Output as opusic-c writes it, reused.
    scratch: Vec<u16>,
    complexity: u8,
}

impl fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("complexity", &self.complexity)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A decoder for 48 kHz mono at [`DEFAULT_DECODER_COMPLEXITY`].
    pub fn new() -> Result<Self, AudioError> {
        Self::with_complexity(DEFAULT_DECODER_COMPLEXITY)
    }

    /// A decoder at this complexity (0..=10, clamped): 0..=4 classic concealment, 5 deep
    /// PLC, 6 and 7 also the LACE and NoLACE enhancers.
    pub fn with_complexity(complexity: u8) -> Result<Self, AudioError> {
        let complexity = complexity.min(10);
        let mut decoder = opusic_c::Decoder::new(Channels::Mono, SampleRate::Hz48000)
            .map_err(|e| codec_error("creating the decoder", e))?;
        decoder
            .set_complexity(complexity)
            .map_err(|e| codec_error("setting the decoder complexity", e))?;
        let inner = Dred::new(decoder).map_err(|e| codec_error("creating the DRED decoder", e))?;
        Ok(OpusDecoder {
            inner,
            scratch: vec![0; MAX_FRAME_SAMPLES],
            complexity,
        })
    }

    /// The complexity in force.
    pub fn complexity(&self) -> u8 {
        self.complexity
    }

    /// Decodes one packet into `out`, which must hold the whole packet (up to
    /// [`MAX_FRAME_SAMPLES`]); returns the samples written. An empty, oversized or
    /// corrupt payload is an error (for a lost packet call [`conceal`](Self::conceal)).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, AudioError> {
        check_payload(payload)?;
        self.run("decoding", out, |dred, pcm| {
            dred.decoder_mut().decode_to_slice(payload, pcm, false)
        })
    }

    /// Rebuilds a lost frame from the in-band FEC carried by the packet after it,
    /// `next_payload`. `out.len()` must be the lost frame's length (a multiple of 2.5 ms,
    /// at most [`MAX_FRAME_SAMPLES`]); it is filled completely. When `next_payload` has no
    /// FEC data libopus conceals instead. Decode `next_payload` itself normally afterwards.
    pub fn decode_fec(
        &mut self,
        next_payload: &[u8],
        out: &mut [i16],
    ) -> Result<usize, AudioError> {
        check_payload(next_payload)?;
        check_missing(out)?;
        self.run("decoding FEC", out, |dred, pcm| {
            dred.decoder_mut().decode_to_slice(next_payload, pcm, true)
        })
    }

    /// Rebuilds the `out.len()` samples just before `later_payload` from the DRED data it
    /// carries: with a later packet `k` frames on, `out` spans the `k` missing frames. Where
    /// the packet carries no DRED, or not that far back, libopus conceals instead. Decode
    /// `later_payload` itself normally afterwards.
    pub fn decode_dred(
        &mut self,
        later_payload: &[u8],
        out: &mut [i16],
    ) -> Result<usize, AudioError> {
        check_payload(later_payload)?;
        check_missing(out)?;
        self.run("decoding DRED", out, |dred, pcm| {
            dred.decode_to_slice(later_payload, pcm)
        })
    }

    /// Packet-loss concealment: fills `out` (a multiple of 2.5 ms, at most
    /// [`MAX_FRAME_SAMPLES`]) with audio that continues what came before.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, AudioError> {
        check_missing(out)?;
        self.run("concealing", out, |dred, pcm| {
            dred.decoder_mut().decode_to_slice(&[], pcm, false)
        })
    }

    /// Comfort noise while the sender is silent (DTX): concealment, at complexity 0 for
    /// this call only. From complexity 5 libopus conceals with its neural PLC (FARGAN), and
    /// a silent peer's whole silence was concealed that way: the largest part of a call's
    /// decoding cost, for noise the sender's own comfort-noise updates describe anyway.
    pub fn comfort_noise(&mut self, out: &mut [i16]) -> Result<usize, AudioError> {
        if self.complexity < DEEP_PLC_COMPLEXITY {
            return self.conceal(out);
        }
        self.set_decoder_complexity(0)?;
        let concealed = self.conceal(out);
        self.set_decoder_complexity(self.complexity)?;
        concealed
    }

    /// The complexity libopus has now (tests check it is restored after comfort noise).
    #[cfg(test)]
    pub(crate) fn libopus_complexity(&mut self) -> Result<u8, AudioError> {
        self.inner
            .decoder_mut()
            .get_complexity()
            .map_err(|e| codec_error("reading the decoder complexity", e))
    }

    fn set_decoder_complexity(&mut self, complexity: u8) -> Result<(), AudioError> {
        self.inner
            .decoder_mut()
            .set_complexity(complexity)
            .map_err(|e| codec_error("setting the decoder complexity", e))
    }

    /// Runs one libopus decode into the scratch buffer (as long as `out`, at most
    /// [`MAX_FRAME_SAMPLES`]) and copies what it wrote into `out`.
    fn run(
        &mut self,
        what: &str,
        out: &mut [i16],
        decode: impl FnOnce(&mut Dred, &mut [u16]) -> Result<usize, ErrorCode>,
    ) -> Result<usize, AudioError> {
        let len = out.len().min(MAX_FRAME_SAMPLES);
        let scratch = self.scratch.get_mut(..len).unwrap_or_default();
        let n = decode(&mut self.inner, scratch).map_err(|e| codec_error(what, e))?;
        Ok(copy_out(scratch, out, n))
    }
}

/// Copies the first `n` decoded samples (opusic-c's `u16` holding `i16` bits) into `out`;
/// returns how many were copied.
fn copy_out(decoded: &[u16], out: &mut [i16], n: usize) -> usize {
    let mut copied = 0;
    for (dst, src) in out.iter_mut().zip(decoded.iter().take(n)) {
        *dst = src.cast_signed();
        copied += 1;
    }
    copied
}

/// Rejects payloads no encoder makes before libopus sees them.
fn check_payload(payload: &[u8]) -> Result<(), AudioError> {
    if payload.is_empty() {
        return Err(AudioError::Codec("empty payload".to_owned()));
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(AudioError::Codec(format!(
            "payload of {} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit",
            payload.len()
        )));
    }
    // The framing rules of RFC 6716 §3.4 (frame counts, lengths, padding, at most 120 ms),
    // checked by libopus's own parser before anything is decoded. opusic-c exposes that
    // parser only through the repacketizer, whose `cat` runs it.
    let mut repacketizer =
        Repacketizer::new().map_err(|e| codec_error("creating the repacketizer", e))?;
    repacketizer
        .start()
        .add_packet(payload)
        .map_err(|e| codec_error("packet", e))?;
    Ok(())
}

/// FEC and concealment must be asked for exactly the missing duration, in 2.5 ms steps.
fn check_missing(out: &[i16]) -> Result<(), AudioError> {
    if out.is_empty()
        || out.len() > MAX_FRAME_SAMPLES
        || !out.len().is_multiple_of(PLC_STEP_SAMPLES)
    {
        return Err(AudioError::Codec(format!(
            "cannot conceal {} samples: use a multiple of {PLC_STEP_SAMPLES} up to {MAX_FRAME_SAMPLES}",
            out.len()
        )));
    }
    Ok(())
}

fn codec_error(what: &str, error: ErrorCode) -> AudioError {
    AudioError::Codec(format!("{what}: {}", error.message()))
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
